"""The generic per-key store under the video and batch stores: quotas per scope, TTL sweep on an injected clock
(no sleeps), the reserve / expire / close hooks, remove and close_all."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pytest

from perceptra_seg.service.scoped_store import Quota, ScopedStore


class Full(Exception):
    """Raised by the test quotas; carries the count the store reported."""

    def __init__(self, kind: str, held: int) -> None:
        super().__init__(f"{kind}: {held}")
        self.kind, self.held = kind, held


@dataclass(eq=False)
class Item:
    name: str
    since: float | None = 0.0
    busy: bool = False


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _store(clock: Clock, *, limit: int = 2, ttl_s: float = 10.0, **hooks: object) -> ScopedStore[Item]:
    quota = Quota[Item](limit, lambda held: Full("all", held))
    return ScopedStore[Item](ttl_s=ttl_s, since=lambda item: item.since, quotas=[quota], clock=clock, **hooks)  # type: ignore[arg-type]


def test_capacity_is_counted_per_scope() -> None:
    clock = Clock()
    store = _store(clock, limit=2)
    store.add("a", "1", Item("a1", since=clock.now))
    store.add("a", "2", Item("a2", since=clock.now))
    with pytest.raises(Full) as raised:
        store.check("a")
    assert raised.value.held == 2
    with pytest.raises(Full):
        store.add("a", "3", Item("a3"))
    assert store.get("a", "3") is None and len(store) == 2  # a refused entry is not stored
    store.check("b")  # another scope has its own quota
    store.add("b", "1", Item("b1", since=clock.now))
    assert store.get("a", "1") is not None and store.get("a", "1").name == "a1"  # type: ignore[union-attr]
    assert store.get("b", "1").name == "b1"  # type: ignore[union-attr]
    assert store.get("b", "2") is None  # another scope's id (a's "2") is unknown here
    store.add("a", "3", Item("a3"), check=False)  # the caller may bypass the quota on purpose
    assert store.count("a") == 3


def test_a_quota_counts_only_the_entries_it_selects() -> None:
    clock = Clock()
    running = Quota[Item](1, lambda held: Full("running", held), lambda item: item.since is None)
    total = Quota[Item](3, lambda held: Full("total", held))
    store = ScopedStore[Item](ttl_s=10.0, since=lambda item: item.since, quotas=[running, total], clock=clock)
    first = store.add("a", "1", Item("1", since=None))
    with pytest.raises(Full) as raised:
        store.check("a")
    assert (raised.value.kind, raised.value.held) == ("running", 1)
    first.since = clock.now  # finished: no longer counted by the first quota
    store.add("a", "2", Item("2", since=clock.now))
    store.add("a", "3", Item("3", since=None))
    with pytest.raises(Full) as raised:
        store.check("a")
    assert raised.value.kind == "running"
    store.pop("a", "3")
    fourth = store.add("a", "4", Item("4", since=None))  # one running, three in all
    fourth.since = clock.now
    with pytest.raises(Full) as raised:
        store.add("a", "5", Item("5", since=None))
    assert (raised.value.kind, raised.value.held) == ("total", 3)
    assert store.count("a") == 3 and store.count("a", lambda item: item.since is None) == 0


def test_ttl_expiry_on_an_injected_clock() -> None:
    clock = Clock()
    expired: list[str] = []
    store = _store(clock, limit=5, ttl_s=10.0, on_expire=lambda item: expired.append(item.name))
    store.add("a", "old", Item("old", since=clock.now))
    store.add("a", "never", Item("never", since=None))  # no TTL while since is None
    clock.now += 5
    store.add("a", "new", Item("new", since=clock.now))
    clock.now += 4.999
    assert store.sweep() == 0 and len(store) == 3
    clock.now += 0.001  # exactly ttl_s after "old": it expires
    assert store.get("a", "old") is None  # get sweeps first
    assert expired == ["old"] and len(store) == 2
    clock.now += 1000
    assert store.sweep() == 1 and expired == ["old", "new"]
    assert store.get("a", "never") is not None


def test_expired_entries_free_their_quota() -> None:
    clock = Clock()
    store = _store(clock, limit=1, ttl_s=10.0)
    store.add("a", "1", Item("1", since=clock.now))
    with pytest.raises(Full):
        store.check("a")
    clock.now += 10
    store.check("a")  # check sweeps first
    store.add("a", "2", Item("2", since=clock.now))
    assert store.count("a") == 1


def test_reserve_keeps_a_busy_entry_until_a_later_sweep() -> None:
    clock = Clock()
    expired: list[str] = []
    store = _store(
        clock,
        limit=5,
        reserve=lambda item: not item.busy,
        on_expire=lambda item: expired.append(item.name),
    )
    busy = store.add("a", "busy", Item("busy", since=clock.now, busy=True))
    store.add("a", "idle", Item("idle", since=clock.now))
    clock.now += 20
    assert store.sweep() == 1 and expired == ["idle"]
    assert store.get("a", "busy") is busy
    busy.busy = False
    assert store.sweep() == 1 and expired == ["idle", "busy"] and len(store) == 0


def test_pop_removes_without_hooks_and_frees_the_place() -> None:
    clock = Clock()
    seen: list[str] = []
    store = _store(clock, limit=1, on_expire=seen.append, on_close=seen.append)
    item = store.add("a", "1", Item("1", since=clock.now))
    assert store.pop("b", "1") is None  # another scope cannot remove it
    assert store.pop("a", "1") is item and store.pop("a", "1") is None
    assert seen == [] and len(store) == 0
    store.add("a", "2", Item("2", since=clock.now))


def test_close_all_runs_the_close_hook_and_empties_the_store() -> None:
    clock = Clock()
    closed: list[str] = []
    store = _store(clock, limit=5, on_close=lambda item: closed.append(item.name))
    store.add("a", "1", Item("a1", since=None))
    store.add("b", "1", Item("b1", since=None))
    returned = store.close_all()
    assert sorted(item.name for item in returned) == ["a1", "b1"] == sorted(closed)
    assert len(store) == 0 and store.values() == [] and store.close_all() == []


def test_the_clock_attribute_can_be_replaced() -> None:
    store = _store(Clock(), limit=5)
    store.add("a", "1", Item("1", since=100.0))
    store.clock = lambda: 1000.0
    assert store.sweep() == 1


def test_threads_racing_for_the_last_place_get_it_once() -> None:
    store = _store(Clock(), limit=3)
    start = threading.Barrier(8)
    refused: list[int] = []

    def add(index: int) -> None:
        start.wait()
        try:
            store.add("a", str(index), Item(str(index), since=None))
        except Full as exc:
            refused.append(exc.held)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert store.count("a") == 3 and refused == [3] * 5
