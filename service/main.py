"""Repository-root alias of :mod:`perceptra_seg.service.main`: ``uvicorn service.main:app``."""

from __future__ import annotations

from typing import Any

from perceptra_seg.service.main import create_app_from_env, serve

__all__ = ["create_app_from_env", "serve"]  # and the lazy `app`


def __getattr__(name: str) -> Any:
    if name == "app":
        from perceptra_seg.service import main

        return main.app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
