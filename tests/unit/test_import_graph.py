"""The package's module-level imports form no cycle (a cycle makes import order matter and hides layering slips).

Only imports that run when a module is imported count: imports under ``if TYPE_CHECKING:`` and imports inside
functions are skipped, since neither runs at import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import perceptra_seg

PACKAGE_ROOT = Path(perceptra_seg.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            pending.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                pending.extend(handler.body)
    return found


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = module if is_package else module.rpartition(".")[0]
        for _ in range(max(node.level - 1, 0)):
            base = base.rpartition(".")[0]
        stem = node.module or ""
        prefix = stem if node.level == 0 else ".".join(p for p in (base, stem) if p)
        names = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
    return {name for name in names if name in known}


def _parse(path: Path) -> ast.Module:
    """``ast.parse`` of ``path``, tried up to three times: CPython 3.11 keeps the AST builder's recursion count in
    interpreter-wide state, so a parse running at the same time in another thread (a library's background thread
    left by an earlier test) can make a correct parse fail with "SystemError: AST constructor recursion
    depth mismatch" (python/cpython#106905)."""
    source = path.read_text(encoding="utf-8")
    for _ in range(2):
        try:
            return ast.parse(source)
        except SystemError:
            continue
    return ast.parse(source)


def _graph() -> dict[str, set[str]]:
    files = {_module_name(path): path for path in PACKAGE_ROOT.rglob("*.py")}
    known = set(files)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = _parse(path)
        edges: set[str] = set()
        for node in _top_level_imports(tree):
            edges |= _targets(module, path.name == "__init__.py", node, known)
        graph[module] = edges - {module}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_service_context_and_errors_do_not_import_each_other() -> None:
    graph = _graph()
    assert "perceptra_seg.service.context" not in graph["perceptra_seg.service.errors"]


def test_package_has_no_import_cycle() -> None:
    assert _cycles(_graph()) == []
