"""The REST service: ``create_app(config)`` builds the FastAPI app; ``uvicorn perceptra_seg.service.main:app`` runs it.

Needs the ``server`` extra (installed from source, see :func:`perceptra_seg.extras.install_command`); without it
``create_app`` raises :class:`~perceptra_seg.exceptions.ConfigError` naming the install line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        try:
            from .app import create_app
        except ImportError as exc:
            from ..extras import missing_extra

            raise missing_extra("server", exc) from exc
        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
