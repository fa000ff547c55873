"""Models a :class:`~perceptra_seg.core.Segmentor` loads on first use and keeps until it closes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ..core import Segmentor

__all__ = ["drop", "loaded_once"]

_LOCK = threading.Lock()
T = TypeVar("T")


def loaded_once(seg: Segmentor, attribute: str, build: Callable[[], T]) -> T:
    """``seg``'s ``attribute``, made by ``build()`` on first use (once, even when threads race; loads wait for each
    other). :meth:`Segmentor.close` drops it."""
    with _LOCK:
        value: Any = seg.__dict__.get(attribute)
        if value is None:
            value = build()
            seg.__dict__[attribute] = value
        return value


def drop(seg: Segmentor, attribute: str) -> None:
    """Forget ``seg``'s ``attribute`` (users of it keep their reference)."""
    with _LOCK:
        seg.__dict__.pop(attribute, None)
