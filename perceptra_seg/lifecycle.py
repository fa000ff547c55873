"""The Segmentor's backend slot: calls borrow the current backend; replacing or closing it waits for them.

``Segmentor.set_backend`` and ``Segmentor.close`` may run while other threads are inside ``segment`` / ``embed`` /
``warmup``. Each of those calls leases the backend that is current when it starts and keeps using that one object
until it returns (nested calls in the same thread reuse the lease). A backend that is replaced or closed is closed
as soon as no call holds it: at once when idle, otherwise by the last call to finish. So a running call never
sees its backend closed under it, and a call that starts after ``close()`` meets a closed backend, which raises
:class:`~perceptra_seg.exceptions.BackendError` on use.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
from collections.abc import Callable, Iterator
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from .backends.base import Backend

__all__ = ["BackendSlot", "holds_backend"]

#: Per thread/task: the backend each slot (by id) has lent to the call running there.
_LEASED: contextvars.ContextVar[dict[int, Backend] | None] = contextvars.ContextVar("segmentor_leases", default=None)


class BackendSlot:
    """Holds the current backend and counts the calls using each backend object."""

    def __init__(self, backend: Backend) -> None:
        self._current = backend
        self._lock = threading.Lock()
        self._users: dict[int, int] = {}  # id(backend) -> running calls
        self._retired: dict[int, Backend] = {}  # replaced or closed, waiting for their last call

    def active(self) -> Backend:
        """The backend of the call running in this context, else the current one."""
        leased = _LEASED.get()
        backend = None if leased is None else leased.get(id(self))
        return self._current if backend is None else backend

    @contextlib.contextmanager
    def lease(self) -> Iterator[Backend]:
        """Borrow the current backend for the duration of one call."""
        leased = _LEASED.get() or {}
        if id(self) in leased:  # nested call (segment_from_box -> segment): same backend, already counted
            yield leased[id(self)]
            return
        with self._lock:
            backend = self._current
            self._users[id(backend)] = self._users.get(id(backend), 0) + 1
        token = _LEASED.set({**leased, id(self): backend})
        try:
            yield backend
        finally:
            _LEASED.reset(token)
            with self._lock:
                remaining = self._users[id(backend)] - 1
                if remaining:
                    self._users[id(backend)] = remaining
                else:
                    del self._users[id(backend)]
                close_now = remaining == 0 and self._retired.pop(id(backend), None) is not None
            if close_now:
                backend.close()

    def replace(self, backend: Backend) -> None:
        """Make ``backend`` current; the previous one closes when its last call returns (now, when idle)."""
        with self._lock:
            old, self._current = self._current, backend
        self._retire(old)

    def close(self) -> None:
        """Close the current backend once no call holds it; it stays current, so later calls fail clearly."""
        self._retire(self._current)

    def _retire(self, backend: Backend) -> None:
        with self._lock:
            busy = id(backend) in self._users
            if busy:
                self._retired[id(backend)] = backend
        if not busy:
            backend.close()


class _HasSlot(Protocol):
    _slot: BackendSlot


S = TypeVar("S", bound=_HasSlot)
P = ParamSpec("P")
R = TypeVar("R")


def holds_backend(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """Run a ``Segmentor`` method under a lease of its backend (see :class:`BackendSlot`)."""

    @functools.wraps(method)
    def wrapper(self: S, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._slot.lease():
            return method(self, *args, **kwargs)

    return wrapper
