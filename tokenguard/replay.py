"""Seen DPoP ``jti`` values (RFC 9449 §11.1), in-process or in a shared Redis.

A proof's ``jti`` is remembered for as long as the proof itself would be
accepted (its ``iat`` window), so a replay inside that window is refused and
nothing outlives it. Both stores are bounded and fail closed: when full, or
when Redis cannot answer, the proof is refused with 503 (the client retries;
an unchecked proof is never accepted).

Keys are a SHA-256 of the proof key thumbprint and the ``jti``: a client cannot
burn another client's ``jti`` values, and raw values never reach Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import threading
import weakref
from typing import Any, Protocol, runtime_checkable

from .errors import ConfigurationError, ServiceUnavailable

__all__ = ["DEFAULT_MAX_ENTRIES", "MemoryReplayStore", "RedisReplayStore", "ReplayStore", "replay_key"]

#: Entries an in-process store holds before it refuses new proofs. At 300 s per
#: entry this admits ~330 new proofs a second; one entry costs ~150 bytes.
DEFAULT_MAX_ENTRIES = 100_000


def replay_key(jkt: str, jti: str) -> str:
    """The store key of a proof: bound to its key so clients cannot collide."""
    return hashlib.sha256(f"{jkt}\0{jti}".encode("utf-8", "surrogateescape")).hexdigest()


@runtime_checkable
class ReplayStore(Protocol):
    """Remembers proof identifiers until they expire.

    ``add``/``add_sync`` record ``key`` until ``expires_at`` and return
    ``True`` when it was new, ``False`` when it was seen before (a replay).
    They raise :class:`~tokenguard.ServiceUnavailable` when they cannot tell.
    """

    def add_sync(self, key: str, expires_at: float, now: float) -> bool: ...

    async def add(self, key: str, expires_at: float, now: float) -> bool: ...


class MemoryReplayStore:
    """An in-process, bounded replay store: for one worker process.

    Args:
        max_entries: live entries held; beyond it new proofs are refused with
            503 (fail closed) until old ones expire.

    Raises:
        ConfigurationError: ``max_entries`` is not positive.
    """

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError(f"max_entries must be a positive whole number, not {max_entries!r}")
        self.max_entries = max_entries
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    def add_sync(self, key: str, expires_at: float, now: float) -> bool:
        """Record ``key``; ``False`` if it is already live (a replay)."""
        with self._lock:
            heap = self._heap
            while heap and heap[0][0] <= now:
                expired_at, old = heapq.heappop(heap)
                if self._expiry.get(old) == expired_at:
                    del self._expiry[old]
            seen = self._expiry.get(key)
            if seen is not None and seen > now:
                return False
            if len(self._expiry) >= self.max_entries:
                # Fail closed: accepting without remembering would let a flood
                # of proofs make room for a replay.
                raise ServiceUnavailable("DPoP replay store is full", retry_after=5, reason="replay_store_full")
            self._expiry[key] = expires_at
            heapq.heappush(heap, (expires_at, key))
            return True

    async def add(self, key: str, expires_at: float, now: float) -> bool:
        """As :meth:`add_sync`; never waits."""
        return self.add_sync(key, expires_at, now)


class RedisReplayStore:
    """A replay store shared by every worker and host, in Redis (``SET NX PX``).

    Args:
        url: a ``redis://`` or ``rediss://`` URL.
        prefix: key prefix. The default's ``{dpop-jti}`` hash tag keeps the
            entries and their counter in one Redis Cluster slot, which the
            single atomic script needs.
        max_entries: refuse new proofs (503) once this many are live, checked
            with a counter that expires with them; ``0`` leaves the bound to
            Redis's ``maxmemory`` (configure ``noeviction`` so a full Redis
            refuses writes instead of forgetting seen proofs).
        client / async_client: bring your own ``redis`` clients.

    Any Redis error is 503 (fail closed), never an acceptance.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str = "tokenguard:{dpop-jti}:",
        max_entries: int = 1_000_000,
        client: Any = None,
        async_client: Any = None,
    ) -> None:
        if url is None and client is None and async_client is None:
            raise ConfigurationError("RedisReplayStore needs url or a client")
        if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError("url must be a redis:// or rediss:// URL")
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 0:
            raise ConfigurationError(f"max_entries must be a non-negative whole number, not {max_entries!r}")
        self.url = url
        self.prefix = prefix
        self.max_entries = max_entries
        self._client = client
        self._async_client = async_client
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"RedisReplayStore(prefix={self.prefix!r})"

    def _sync(self) -> Any:
        if self._client is None:
            import redis

            assert self.url is not None
            self._client = redis.Redis.from_url(self.url, socket_timeout=2.0, socket_connect_timeout=2.0)
        return self._client

    def _async(self) -> Any:
        if self._async_client is not None:
            return self._async_client
        # redis-py's asyncio connections are bound to their event loop: one client per loop.
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            import redis.asyncio

            assert self.url is not None
            client = redis.asyncio.Redis.from_url(self.url, socket_timeout=2.0, socket_connect_timeout=2.0)
            self._async_clients[loop] = client
        return client

    @staticmethod
    def _ttl_ms(expires_at: float, now: float) -> int:
        return max(1, int((expires_at - now) * 1000) + 1)

    # One round trip, atomic (RFC 9449 §11.1: two workers must not each accept
    # one copy of a replayed proof). KEYS[1] is the entry; KEYS[2..] count the
    # entries added per 60 s bucket over the longest entry lifetime, newest
    # first: their sum bounds the live entries from above (fail closed), and
    # old buckets expire by themselves, so the bound never sticks.
    _SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local limit = tonumber(ARGV[2])
if limit > 0 then
  local count = 0
  for i = 2, #KEYS do count = count + tonumber(redis.call('GET', KEYS[i]) or '0') end
  if count >= limit then return -1 end
end
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
if limit > 0 then
  redis.call('INCR', KEYS[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
return 1
"""
    _BUCKET_SECONDS = 60

    def _call(self, key: str, expires_at: float, now: float) -> tuple[Any, ...]:
        ttl_ms = self._ttl_ms(expires_at, now)
        bucket = int(now // self._BUCKET_SECONDS)
        span = ttl_ms // (self._BUCKET_SECONDS * 1000) + 1
        counters = [f"{self.prefix}count:{bucket - i}" for i in range(span + 1)]
        keep_ms = (span + 2) * self._BUCKET_SECONDS * 1000
        return (self._SCRIPT, 1 + len(counters), self.prefix + key, *counters, ttl_ms, self.max_entries, keep_ms)

    def _answer(self, result: object) -> bool:
        if result == -1:
            raise ServiceUnavailable("DPoP replay store is full", retry_after=5, reason="replay_store_full")
        return result == 1

    def add_sync(self, key: str, expires_at: float, now: float) -> bool:
        """Record ``key`` in Redis; ``False`` on a replay; 503 on any Redis failure."""
        try:
            result = self._sync().eval(*self._call(key, expires_at, now))
        except Exception as exc:  # noqa: BLE001 - any failure must refuse, never accept
            raise ServiceUnavailable("DPoP replay store unavailable", reason="replay_store") from exc
        return self._answer(result)

    async def add(self, key: str, expires_at: float, now: float) -> bool:
        """As :meth:`add_sync`, awaiting the async client."""
        try:
            result = await self._async().eval(*self._call(key, expires_at, now))
        except Exception as exc:  # noqa: BLE001 - any failure must refuse, never accept
            raise ServiceUnavailable("DPoP replay store unavailable", reason="replay_store") from exc
        return self._answer(result)

    def close(self) -> None:
        """Close the sync client."""
        if self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        """Close this event loop's async client (call it from the app's shutdown)."""
        if self._async_client is not None:
            await self._async_client.aclose()
            return
        client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()
