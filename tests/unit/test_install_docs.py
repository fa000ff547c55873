"""No document or message sends users to the package index for ``perceptra-seg``: that name there is another project.

Every ``pip install`` line in the README, docs, Dockerfiles, Makefile, examples and the package's own messages must
install this project from its source (``.[extras]`` in a clone, or ``perceptra-seg[extras] @ git+URL``).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from perceptra_seg.extras import PROJECT_URL, install_command

ROOT = Path(__file__).resolve().parents[2]
_PATTERNS = (
    "README.md",
    "docs/*.md",
    "Dockerfile*",
    "Makefile",
    "config.yaml",
    "mkdocs.yml",
    "examples/**/*",
    "bench/*.md",
    "service/**/*.py",
    "perceptra_seg/**/*.py",
)
_NAME = re.compile(r"^perceptra-seg(\[[^\]]*\])?$", re.IGNORECASE)


def _install_lines(text: str) -> list[str]:
    """The arguments of every ``pip install`` in ``text`` (up to the end of line, a backtick, ``;`` or a comment)."""
    found = []
    for match in re.finditer(r"pip3?\s+install\s+([^\n`]*)", text):
        found.append(re.split(r"\s#|;", match.group(1))[0])  # a comment or the next sentence/command ends it
    return found


def _by_name(arguments: str) -> list[str]:
    """Requirements in ``arguments`` that name perceptra-seg without a direct ``@ URL`` reference."""
    try:
        tokens = shlex.split(arguments)
    except ValueError:  # unbalanced quotes inside a Python string literal: fall back to whitespace
        tokens = [t.strip("'\"(),") for t in arguments.split()]
    bad = []
    for index, token in enumerate(tokens):
        name = token.split("@", 1)[0].strip()
        follows = token[len(name) :].strip() or (tokens[index + 1] if index + 1 < len(tokens) else "")
        if _NAME.match(name) and not follows.startswith("@"):
            bad.append(token)
    return bad


def _files() -> list[Path]:
    return sorted({p for pattern in _PATTERNS for p in ROOT.glob(pattern) if p.is_file()})


def test_the_scanner_tells_index_installs_from_source_installs() -> None:
    assert _by_name('"perceptra-seg[torch]"') == ["perceptra-seg[torch]"]
    assert _by_name("-U perceptra-seg") == ["perceptra-seg"]
    assert _by_name("'perceptra-seg[server]'\") from exc") == ["perceptra-seg[server]"]
    assert _by_name(f'"perceptra-seg[torch] @ git+{PROJECT_URL}"') == []
    assert _by_name(f"perceptra-seg@git+{PROJECT_URL}") == []
    assert _by_name('".[torch,server,cli]"') == [] and _by_name("-e '.[dev]'") == []
    assert _install_lines(f"run `{install_command('cli')}` first") == [f'"perceptra-seg[cli] @ git+{PROJECT_URL}"']


def test_no_document_installs_perceptra_seg_from_the_package_index() -> None:
    files = _files()
    assert any(p.name == "README.md" for p in files) and len(files) > 10
    offenders = [
        f"{path.relative_to(ROOT)}: pip install {arguments}"
        for path in files
        for arguments in _install_lines(path.read_text(encoding="utf-8", errors="replace"))
        if _by_name(arguments)
    ]
    assert offenders == []


def test_readme_says_why_and_gives_both_source_installs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'pip install ".[torch]"' in readme
    assert f'pip install "perceptra-seg[torch] @ git+{PROJECT_URL}"' in readme
    assert "different, older project" in readme


@pytest.mark.parametrize("extra", ["torch", "server", "cli", "onnx", "export"])
def test_install_command_points_at_the_repository_of_pyproject(extra: str) -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f'Homepage = "{PROJECT_URL}"' in pyproject
    assert install_command(extra) == f'pip install "perceptra-seg[{extra}] @ git+{PROJECT_URL}"'
