"""``segmentor-cli``: the command-line interface (needs the ``cli`` extra: Typer and rich).

Commands: ``segment-box``, ``segment-points``, ``segment``, ``batch``, ``serve``, ``download``, ``info`` and
``config show``; see ``segmentor-cli --help`` and docs/cli.md.
"""

from __future__ import annotations

try:
    import rich  # noqa: F401
    import typer  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by tests that hide the modules
    raise ImportError(
        "segmentor-cli needs Typer and rich, which are not installed: pip install 'perceptra-seg[cli]'"
    ) from exc

from .app import app, main

__all__ = ["app", "main"]
