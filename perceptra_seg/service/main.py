"""ASGI entry point: ``uvicorn perceptra_seg.service.main:app`` or ``python -m perceptra_seg.service.main``.

``app`` is created on first access (not at import) from the YAML file named by ``SEGMENTOR_CONFIG`` (optional)
plus the ``SEGMENTOR_*`` environment variables; the model loads in the app's lifespan, in the worker process.
``uvicorn --factory perceptra_seg.service.main:create_app_from_env`` works as well.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..config import SegmentorConfig

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

__all__ = ["create_app_from_env", "load_config_from_env", "serve", "uvicorn_config"]  # and the lazy `app`

_app: FastAPI | None = None


def load_config_from_env() -> SegmentorConfig:
    """``SEGMENTOR_CONFIG`` (a YAML path, optional) + ``SEGMENTOR_*`` variables."""
    return SegmentorConfig.resolve(os.environ.get("SEGMENTOR_CONFIG") or None)


def create_app_from_env() -> FastAPI:
    """The app for :func:`load_config_from_env` (``uvicorn --factory ...:create_app_from_env``)."""
    from . import create_app

    return create_app(load_config_from_env())


def __getattr__(name: str) -> Any:
    global _app
    if name == "app":
        if _app is None:
            _app = create_app_from_env()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def uvicorn_config(app: Any, config: SegmentorConfig) -> uvicorn.Config:
    """uvicorn settings for ``app``: ``server.host``/``server.port`` and the connection limits of
    :mod:`perceptra_seg.service.connections`; logging is left to the app's lifespan."""
    uvicorn = _import_uvicorn()
    from .connections import uvicorn_options

    settings = uvicorn.Config(
        app,
        host=config.server.host,
        port=config.server.port,
        log_config=None,
        access_log=False,
        **uvicorn_options(config),
    )
    setattr(settings, "header_timeout_s", config.server.header_timeout_s)  # noqa: B010 - read by the protocol
    return settings


def serve(config: SegmentorConfig | None = None) -> None:
    """Run the service with uvicorn on ``server.host``:``server.port`` (blocks until stopped)."""
    uvicorn = _import_uvicorn()
    from . import create_app

    cfg = config if config is not None else load_config_from_env()
    uvicorn.Server(uvicorn_config(create_app(cfg), cfg)).run()


def _import_uvicorn() -> Any:
    """``uvicorn``, or a :class:`~perceptra_seg.exceptions.ConfigError` naming the server extra's install line."""
    try:
        import uvicorn
    except ImportError as exc:
        from ..extras import missing_extra

        raise missing_extra("server", exc) from exc
    return uvicorn


if __name__ == "__main__":
    serve()
