"""A thread-safe LRU of image embeddings, bounded by bytes, computing each key once under concurrency."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

__all__ = ["CacheStats", "EmbeddingCache"]


class _Sized(Protocol):
    nbytes: int


V = TypeVar("V", bound=_Sized)


@dataclass(frozen=True)
class CacheStats:
    """Counters since the cache was created (``bytes``/``entries`` are current values)."""

    hits: int
    misses: int
    evictions: int
    entries: int
    bytes: int
    max_bytes: int


class _Pending:
    """A computation in flight; later callers for the same key wait on it instead of computing again."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: object = None
        self.error: BaseException | None = None


class EmbeddingCache(Generic[V]):
    """LRU mapping ``key → value`` where each value reports its size in ``nbytes``.

    * Bounded by total ``nbytes``: inserting evicts least-recently-used entries until the total fits; a value
      larger than ``max_bytes`` on its own is returned but not stored.
    * ``get_or_compute`` runs ``compute`` once per key even when many threads ask at the same time; the others
      wait for and share that result (or its exception, which is not cached).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, V] = OrderedDict()
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    def get_or_compute(self, key: str, compute: Callable[[], V]) -> tuple[V, bool]:
        """Return ``(value, hit)``; ``hit`` is False for the caller that computed it (and its waiters)."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self._hits += 1
                return self._entries[key], True
            pending = self._pending.get(key)
            owner = pending is None
            if pending is None:
                pending = self._pending[key] = _Pending()
                self._misses += 1
        if not owner:
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            return pending.value, False  # type: ignore[return-value]
        try:
            value = compute()
        except BaseException as exc:
            pending.error = exc
            raise
        else:
            pending.value = value
            self._store(key, value)
            return value, False
        finally:
            with self._lock:
                self._pending.pop(key, None)
            pending.done.set()

    def _store(self, key: str, value: V) -> None:
        with self._lock:
            if value.nbytes > self.max_bytes:
                return
            self._entries[key] = value
            self._bytes += value.nbytes
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes
                self._evictions += 1

    def get(self, key: str) -> V | None:
        """The cached value, or ``None`` when absent or evicted (counted as a hit or a miss)."""
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                self._hits, self._misses, self._evictions, len(self._entries), self._bytes, self.max_bytes
            )
