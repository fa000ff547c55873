"""A thread-safe map of entries owned by API keys (scopes), with per-scope quotas and a time-to-live.

Both per-key stores of the service are built on :class:`ScopedStore`: the uploaded videos of ``/v1/videos``
(:mod:`.video_store`) and the jobs of ``/v1/batch`` (:mod:`.batch_jobs`). An entry is addressed by
``(scope, item_id)``: another scope asking for the same id finds nothing, as for an id that never existed.

* Quotas (:class:`Quota`): how many entries of one scope may match a predicate (all of them, or only the unfinished
  ones) before the next one is refused with the quota's error. :meth:`ScopedStore.check` and
  :meth:`ScopedStore.add` sweep first, so expired entries never count.
* Time-to-live: ``since(entry)`` gives the clock reading the entry's TTL counts from (its last use, the time it
  finished), or ``None`` while it must not expire. :meth:`ScopedStore.sweep` drops every entry whose TTL has run out;
  an optional ``reserve`` hook can keep one back (a video busy with an operation), and ``on_expire`` releases what
  an expired entry held (outside the store's lock).

The clock is the store's ``clock`` attribute (monotonic seconds), read on every use: tests replace it with a fake
one to expire entries without sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Quota", "ScopedStore"]

T = TypeVar("T")


def _every(_: object) -> bool:
    return True


@dataclass(frozen=True)
class Quota(Generic[T]):
    """At most ``limit`` entries of one scope for which ``counts(entry)`` holds; ``refuse(held)`` builds the error
    raised when the scope already holds ``held >= limit`` of them."""

    limit: int
    refuse: Callable[[int], Exception]
    counts: Callable[[T], bool] = _every


class ScopedStore(Generic[T]):
    """Thread-safe ``(scope, item_id) → entry`` map with per-scope quotas and a TTL sweep.

    Args:
        ttl_s: seconds after ``since(entry)`` at which an entry expires.
        since: the clock reading an entry's TTL counts from, or ``None`` while it must not expire.
        quotas: the per-scope bounds :meth:`check` and :meth:`add` enforce.
        clock: monotonic seconds (tests pass a fake one; the attribute may be replaced later).
        reserve: called under the store's lock for an expired entry; ``False`` keeps it for a later sweep.
        on_expire: called (outside the lock) for each entry a sweep dropped.
        on_close: called (outside the lock) for each entry :meth:`close_all` dropped.
    """

    def __init__(
        self,
        *,
        ttl_s: float,
        since: Callable[[T], float | None],
        quotas: Sequence[Quota[T]] = (),
        clock: Callable[[], float] = time.monotonic,
        reserve: Callable[[T], bool] | None = None,
        on_expire: Callable[[T], None] | None = None,
        on_close: Callable[[T], None] | None = None,
    ) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self.quotas = tuple(quotas)
        self._since = since
        self._reserve = reserve
        self._on_expire = on_expire
        self._on_close = on_close
        self._entries: dict[tuple[str, str], T] = {}
        self._lock = threading.Lock()

    def count(self, scope: str, counts: Callable[[T], bool] = _every) -> int:
        """Entries of ``scope`` for which ``counts(entry)`` holds (no sweep)."""
        with self._lock:
            return self._count(scope, counts)

    def _count(self, scope: str, counts: Callable[[T], bool]) -> int:
        return sum(1 for (owner, _), entry in self._entries.items() if owner == scope and counts(entry))

    def _enforce(self, scope: str) -> None:
        for quota in self.quotas:
            held = self._count(scope, quota.counts)
            if held >= quota.limit:
                raise quota.refuse(held)

    def check(self, scope: str) -> None:
        """Sweep, then raise the first exceeded quota's error when ``scope`` cannot add one more entry."""
        self.sweep()
        with self._lock:
            self._enforce(scope)

    def add(self, scope: str, item_id: str, entry: T, *, check: bool = True) -> T:
        """Store ``entry`` under ``(scope, item_id)`` and return it; with ``check`` the quotas are enforced first
        (sweep, then under the same lock as the insertion, so two threads cannot both take the last place)."""
        if check:
            self.sweep()
        with self._lock:
            if check:
                self._enforce(scope)
            self._entries[(scope, item_id)] = entry
        return entry

    def get(self, scope: str, item_id: str) -> T | None:
        """The entry, or ``None`` (unknown, another scope's, removed or expired — swept first)."""
        self.sweep()
        with self._lock:
            return self._entries.get((scope, item_id))

    def pop(self, scope: str, item_id: str) -> T | None:
        """Remove the entry now and return it (``None`` when there is none); no hook runs."""
        with self._lock:
            return self._entries.pop((scope, item_id), None)

    def values(self) -> list[T]:
        """A snapshot of every entry."""
        with self._lock:
            return list(self._entries.values())

    def sweep(self) -> int:
        """Drop every entry whose TTL ran out (unless ``reserve`` keeps it), run ``on_expire`` on each; the count."""
        now = self.clock()
        expired: list[T] = []
        with self._lock:
            for key, entry in list(self._entries.items()):
                since = self._since(entry)
                if since is None or now - since < self.ttl_s:
                    continue
                if self._reserve is not None and not self._reserve(entry):
                    continue
                del self._entries[key]
                expired.append(entry)
        if self._on_expire is not None:
            for entry in expired:
                self._on_expire(entry)
        return len(expired)

    def close_all(self) -> list[T]:
        """Forget every entry, run ``on_close`` on each, and return them (shutdown)."""
        with self._lock:
            entries, self._entries = list(self._entries.values()), {}
        if self._on_close is not None:
            for entry in entries:
                self._on_close(entry)
        return entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
