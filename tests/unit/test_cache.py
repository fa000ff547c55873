"""The byte-bounded LRU and its single-flight behaviour."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from perceptra_seg.utils.cache import EmbeddingCache


@dataclass
class Blob:
    name: str
    nbytes: int


def test_lru_evicts_by_bytes_not_entries() -> None:
    cache: EmbeddingCache[Blob] = EmbeddingCache(max_bytes=100)
    for name, size in [("a", 40), ("b", 40)]:
        cache.get_or_compute(name, lambda n=name, s=size: Blob(n, s))
    assert cache.get("a") is not None  # touch a: b becomes least recently used
    cache.get_or_compute("c", lambda: Blob("c", 40))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    stats = cache.stats()
    assert (stats.entries, stats.bytes, stats.evictions) == (2, 80, 1)
    cache.get_or_compute("huge", lambda: Blob("huge", 101))  # larger than the bound: returned, not stored
    assert cache.get("huge") is None and cache.stats().bytes == 80


def test_hits_and_misses_are_counted() -> None:
    cache: EmbeddingCache[Blob] = EmbeddingCache(max_bytes=10)
    _, hit = cache.get_or_compute("k", lambda: Blob("k", 1))
    assert not hit
    value, hit = cache.get_or_compute("k", lambda: Blob("other", 1))
    assert hit and value.name == "k"
    assert (cache.stats().hits, cache.stats().misses) == (1, 1)


def test_concurrent_requests_compute_once() -> None:
    cache: EmbeddingCache[Blob] = EmbeddingCache(max_bytes=10)
    calls = []

    def compute() -> Blob:
        calls.append(1)
        time.sleep(0.2)
        return Blob("v", 1)

    results: list[Blob] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_compute("k", compute)[0])) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 8 and all(r is results[0] for r in results)


def test_failed_computation_is_shared_and_not_cached() -> None:
    cache: EmbeddingCache[Blob] = EmbeddingCache(max_bytes=10)

    def boom() -> Blob:
        raise RuntimeError("encoder failed")

    with pytest.raises(RuntimeError, match="encoder failed"):
        cache.get_or_compute("k", boom)
    value, hit = cache.get_or_compute("k", lambda: Blob("ok", 1))
    assert value.name == "ok" and not hit
