"""Protection of the authorization server: a cap on concurrent calls, rate limits.

A flood of never-seen tokens must not become a flood of introspection calls.
Three defences, applied in this order to every introspection the cache
cannot answer (coalesced duplicates never get this far):

1. a per-client token bucket (the client is what the adapter names: the
   peer address), so one noisy client cannot use up the budget of all;
2. a global token bucket on upstream calls per second;
3. a cap on calls in flight, with a bounded wait for a free slot.

Whoever is turned away gets 503 with ``Retry-After``: the API is shedding
load, not judging the token, so clients must not discard it.

:class:`TokenBucket` is pure (callers pass ``now``); :class:`ConcurrencyLimit`
holds the thread and asyncio primitives.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from dataclasses import dataclass

from cachetools import LRUCache

__all__ = ["ConcurrencyLimit", "IntrospectionLimits", "RateLimiter", "TokenBucket"]


@dataclass(frozen=True, slots=True)
class IntrospectionLimits:
    """How hard tokenguard may press the introspection endpoint.

    Args:
        max_concurrent: introspection calls in flight at once per process
            (``0``: no cap). Precedent: Duende's handler has none; Envoy's
            ext_authz relies on cluster circuit breakers (1024 pending).
        max_wait: seconds a call waits for a free slot before 503.
        rate: upstream calls per second per process (``None``: unlimited).
        burst: bucket size for ``rate``; default ``rate`` (one second's worth).
        per_client_rate: calls per second for one client (``None``: unlimited);
            needs the adapter to name the client (they pass the peer address).
        per_client_burst: bucket size for ``per_client_rate``.
        max_clients: most per-client buckets kept (least recently used go first).
    """

    max_concurrent: int = 32
    max_wait: float = 1.0
    rate: float | None = None
    burst: float | None = None
    per_client_rate: float | None = None
    per_client_burst: float | None = None
    max_clients: int = 10_000


class TokenBucket:
    """A token bucket: ``rate`` per second, at most ``burst`` saved up. Not locked."""

    __slots__ = ("_level", "_stamp", "burst", "rate")

    def __init__(self, rate: float, burst: float | None = None, *, now: float = 0.0) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._level = self.burst
        self._stamp = now

    def take(self, now: float) -> float | None:
        """Spend one token: ``None`` if there was one, else seconds until there is."""
        level = min(self.burst, self._level + max(0.0, now - self._stamp) * self.rate)
        self._stamp = now
        if level >= 1.0:
            self._level = level - 1.0
            return None
        self._level = level
        return (1.0 - level) / self.rate


class RateLimiter:
    """The global and per-client buckets of one guard (thread-safe)."""

    def __init__(self, limits: IntrospectionLimits) -> None:
        self._limits = limits
        self._lock = threading.Lock()
        self._global = TokenBucket(limits.rate, limits.burst) if limits.rate else None
        self._global_started = False
        self._clients: LRUCache[str, TokenBucket] = LRUCache(maxsize=max(1, limits.max_clients))

    @property
    def active(self) -> bool:
        """Whether any rate is configured."""
        return self._global is not None or self._limits.per_client_rate is not None

    def take(self, client: str | None, now: float) -> float | None:
        """``None`` when a call may go upstream now; else seconds to wait."""
        with self._lock:
            per_client = self._limits.per_client_rate
            if per_client is not None and client is not None:
                bucket = self._clients.get(client)
                if bucket is None:
                    bucket = self._clients[client] = TokenBucket(per_client, self._limits.per_client_burst, now=now)
                wait = bucket.take(now)
                if wait is not None:
                    return wait
            if self._global is not None:
                if not self._global_started:
                    self._global._stamp = now
                    self._global_started = True
                return self._global.take(now)
            return None


class ConcurrencyLimit:
    """At most ``limit`` holders at once, for threads and for each event loop.

    Threads share one semaphore; each event loop has its own (asyncio
    primitives are bound to a loop), which is what one process runs anyway.
    """

    def __init__(self, limit: int, max_wait: float) -> None:
        self.limit = limit
        self.max_wait = max_wait
        self._threads = threading.BoundedSemaphore(limit) if limit > 0 else None
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )

    def acquire_sync(self) -> bool:
        """Take a slot, waiting at most ``max_wait``; ``False`` when none came free."""
        return self._threads is None or self._threads.acquire(timeout=self.max_wait)

    def release_sync(self) -> None:
        if self._threads is not None:
            self._threads.release()

    async def acquire(self) -> bool:
        """Async twin of :meth:`acquire_sync`."""
        if self.limit <= 0:
            return True
        loop = asyncio.get_running_loop()
        semaphore = self._loops.get(loop)
        if semaphore is None:
            semaphore = self._loops[loop] = asyncio.Semaphore(self.limit)
        if not semaphore.locked():
            await semaphore.acquire()
            return True
        try:
            await asyncio.wait_for(semaphore.acquire(), self.max_wait)
        except TimeoutError:
            return False
        return True

    def release(self) -> None:
        """Async twin of :meth:`release_sync` (call it from the loop that acquired)."""
        if self.limit > 0:
            self._loops[asyncio.get_running_loop()].release()
