"""The REST service: ``create_app(config)`` builds the FastAPI app; ``uvicorn perceptra_seg.service.main:app`` runs it.

Needs the ``server`` extra: ``pip install 'perceptra-seg[server]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["create_app"]

_INSTALL_HINT = "the REST service needs the 'server' extra: pip install 'perceptra-seg[server]'"


def __getattr__(name: str) -> Any:
    if name == "create_app":
        try:
            from .app import create_app
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(f"{_INSTALL_HINT} (missing module {exc.name!r})", name=exc.name) from exc
        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
