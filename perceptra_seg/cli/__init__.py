"""``segmentor-cli``: the command-line interface (needs the ``cli`` extra: Typer and rich).

Commands: ``segment-box``, ``segment-points``, ``segment``, ``batch``, ``track``, ``serve``, ``download``, ``info`` and
``config show``; see ``segmentor-cli --help`` and docs/cli.md.

Without the extra, :func:`main` prints one ``error:`` line naming the install command and exits with status 2, and
``perceptra_seg.cli.app`` raises :class:`~perceptra_seg.exceptions.ConfigError` with the same message.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["app", "main"]


def _load_app() -> Any:
    try:
        import rich  # noqa: F401
        import typer  # noqa: F401
    except ImportError as exc:
        from perceptra_seg.extras import missing_extra

        raise missing_extra("cli", exc) from exc
    from .app import app

    # importing the submodule bound the name ``app`` here to that module; the package's ``app`` is the Typer app
    globals()["app"] = app
    return app


def main() -> None:
    """Console-script entry point of ``segmentor-cli``."""
    from perceptra_seg.exceptions import ConfigError

    try:
        app = _load_app()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    app()


def __getattr__(name: str) -> Any:
    if name == "app":
        return _load_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
