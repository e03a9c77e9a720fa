"""The in-process result cache: size bound, eviction order, deadlines."""

from __future__ import annotations

import threading

import pytest

from tokenguard.cache import CachedResult, MemoryCache

from .helpers import Clock


def entry(until: float) -> CachedResult:
    return CachedResult(None, until, reason="x")


def test_size_bound_evicts_the_least_recently_stored() -> None:
    clock = Clock()
    cache = MemoryCache(3, clock=clock)
    for name in (b"a", b"b", b"c"):
        cache.set(name, entry(clock.now + 60))
    cache.set(b"a", entry(clock.now + 60))  # stored again: now the newest
    cache.set(b"d", entry(clock.now + 60))
    assert len(cache) == 3
    assert cache.get(b"b") is None
    assert all(cache.get(k) is not None for k in (b"a", b"c", b"d"))


def test_expired_entries_are_not_stored_and_are_swept_from_the_front() -> None:
    clock = Clock()
    cache = MemoryCache(100, clock=clock)
    cache.set(b"dead", entry(clock.now - 1))
    assert cache.get(b"dead") is None
    for i in range(10):
        cache.set(bytes([i]), entry(clock.now + 10))
    clock.now += 11
    for i in range(10, 15):
        cache.set(bytes([i]), entry(clock.now + 10))
    assert len(cache) == 5, "each store drops up to two expired entries from the front"


def test_delete_and_clear() -> None:
    cache = MemoryCache(10)
    cache.set(b"k", entry(2e9))
    cache.delete(b"k")
    cache.delete(b"missing")
    assert cache.get(b"k") is None
    cache.set(b"k", entry(2e9))
    cache.clear()
    assert len(cache) == 0
    with pytest.raises(ValueError, match="maxsize"):
        MemoryCache(0)


def test_concurrent_stores_keep_the_bound() -> None:
    cache = MemoryCache(50)

    def store(start: int) -> None:
        for i in range(start, start + 2000):
            cache.set(i.to_bytes(4, "big"), entry(2e9))
            cache.get(max(i - 1, 0).to_bytes(4, "big"))

    threads = [threading.Thread(target=store, args=(n * 10_000,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 50
