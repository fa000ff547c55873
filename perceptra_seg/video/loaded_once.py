"""Models a :class:`~perceptra_seg.core.Segmentor` loads on first use and keeps until it closes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ..core import Segmentor

__all__ = ["drop", "loaded_once"]

_GUARD = threading.Lock()
_LOCK_ATTRIBUTE = "_video_load_lock"
T = TypeVar("T")


def _lock_of(seg: Segmentor) -> threading.Lock:
    """The segmentor's own load lock (loads of other segmentors do not wait for it)."""
    with _GUARD:
        lock: threading.Lock = seg.__dict__.setdefault(_LOCK_ATTRIBUTE, threading.Lock())
        return lock


def loaded_once(seg: Segmentor, attribute: str, build: Callable[[], T]) -> T:
    """``seg``'s ``attribute``, made by ``build()`` on first use (once, even when threads race; the segmentor's
    loads wait for each other). :meth:`Segmentor.close` drops it."""
    with _lock_of(seg):
        value: Any = seg.__dict__.get(attribute)
        if value is None:
            value = build()
            seg.__dict__[attribute] = value
        return value


def drop(seg: Segmentor, attribute: str) -> None:
    """Forget ``seg``'s ``attribute`` (users of it keep their reference)."""
    with _lock_of(seg):
        seg.__dict__.pop(attribute, None)
