"""A shared cache on Redis or Valkey (standalone or Cluster), with redis-py.

Install with ``pip install 'tokenguard[redis]'``. Give the guard a URL or an
instance::

    guard = TokenGuard.from_issuer(..., cache="redis://cache:6379/0")
    guard = TokenGuard.from_issuer(..., cache=RedisCache("rediss://cache:6380/0", encryption_key=key))

Rules:

* **Never the reason a request fails.** Every error (refused connection,
  timeout, a Cluster resharding) is caught; the store then reports "nothing
  there" and is skipped for ``retry_interval`` seconds, so requests do not
  each wait out a timeout. The guard carries on with its in-process cache
  and the provider. One warning per interval says so.
* **Only single-key commands** (``GET``, ``SET ... PX [NX]``, ``DEL``), so
  the same code works on a Cluster, where keys of one request may live on
  different shards.
* **Nothing secret in the clear, nothing trusted unsealed.** Keys are HMACs
  of tokens (see :mod:`tokenguard.cache`). The guard seals every value
  (``tokenguard/_envelope.py``): AES-256-GCM with ``encryption_key``, else
  HMAC-SHA256 with the guard's hash key, bound to the value's own key name
  and a format version, with its creation time and lifetime. A value that
  does not open (another key, moved, replayed past its lifetime) is absent.
* Redis sets the expiry (``PX``) too, but the reader does not rely on it.

A process needs one connection pool for threads and one per asyncio event
loop (redis-py's asyncio connections are bound to their loop), as for httpx.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Sequence
from typing import Any

from ._envelope import aead_keys_of
from .errors import ConfigurationError

__all__ = ["RedisCache"]

logger = logging.getLogger("tokenguard.redis")


def _import_redis() -> Any:
    try:
        import redis
        import redis.asyncio
        import redis.asyncio.cluster
        import redis.cluster
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigurationError("the Redis cache needs redis-py: pip install 'tokenguard[redis]'") from None
    return redis


class RedisCache:
    """The :class:`~tokenguard.shared.SharedStore` for Redis and Valkey.

    Args:
        url: ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL, as redis-py
            takes it (database, user and password included).
        cluster: the URL names a Redis Cluster node (redis-py ``RedisCluster``).
        client / async_client: bring your own redis-py clients instead of a URL
            (e.g. Sentinel); tokenguard then never closes them.
        prefix: namespace of every key, so several APIs can share one Redis.
        encryption_key: 32 random bytes in URL-safe base64 (the format of
            ``Fernet.generate_key()``), or several, newest first, to rotate
            keys: values written with any of them still read. Values are then
            AES-256-GCM encrypted, authenticated with their key name. ``None``
            stores JSON authenticated (HMAC) but readable by whoever reads Redis.
        local_ttl: longest an entry read from or written to Redis stays in
            the in-process cache in front of it (never past its own
            lifetime). Short enough that an entry deleted from Redis (by
            an operator, say, after a revocation) vanishes everywhere soon.
        share_jwt_results: share verified-JWT results too. Off by default: a
            round trip to Redis costs more than verifying a signature, so only
            results that needed an upstream call (introspection, revocation
            checks, custom verifiers) are worth sharing.
        socket_timeout: connect and read timeout of each Redis command.
        retry_interval: after an error, seconds during which Redis is not tried.
        lock_ttl: lifetime of the lock that elects one process to call the
            provider for a token or document (it is released on completion).
        lock_wait: how long the other processes wait for that call's result
            (never longer than the guard's ``deadline``). When the call is still
            running then, or took over a second to fail, they answer 503 with
            ``Retry-After`` (the provider is slow; a second call would only add
            load); when it failed fast, they call the provider themselves.
    """

    def __init__(
        self,
        url: str | None = "redis://localhost:6379/0",
        *,
        cluster: bool = False,
        client: Any = None,
        async_client: Any = None,
        prefix: str = "tokenguard:",
        encryption_key: str | bytes | Sequence[str | bytes] | None = None,
        local_ttl: float = 30.0,
        share_jwt_results: bool = False,
        socket_timeout: float = 0.25,
        retry_interval: float = 5.0,
        lock_ttl: float = 5.0,
        lock_wait: float = 2.0,
    ) -> None:
        self._redis = _import_redis()
        if url is None and client is None:
            raise ConfigurationError("RedisCache needs a url or a client")
        self.url = url
        self.cluster = cluster
        self.prefix = prefix
        self.local_ttl = local_ttl
        self.share_jwt_results = share_jwt_results
        self.socket_timeout = socket_timeout
        self.retry_interval = retry_interval
        self.lock_ttl = lock_ttl
        self.lock_wait = lock_wait
        #: Raw AES-256 keys derived from ``encryption_key``, newest first; the
        #: guard seals values with them (see ``tokenguard/_envelope.py``).
        self.encryption_keys = aead_keys_of(encryption_key)
        self._client = client
        self._own_client = client is None
        self._given_async = async_client
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._down_until = 0.0
        self._last_warning = float("-inf")
        #: Commands that failed (the store was then skipped for ``retry_interval``).
        self.errors = 0

    def __repr__(self) -> str:
        where = "client" if self.url is None else _redact(self.url)
        return f"RedisCache({where!r}, prefix={self.prefix!r}, encrypted={bool(self.encryption_keys)})"

    # ------------------------------------------------------------------ clients

    def _options(self) -> dict[str, Any]:
        return {"socket_timeout": self.socket_timeout, "socket_connect_timeout": self.socket_timeout}

    def _sync(self) -> Any:
        if self._client is None:
            assert self.url is not None
            factory = self._redis.cluster.RedisCluster if self.cluster else self._redis.Redis
            self._client = factory.from_url(self.url, **self._options())
        return self._client

    def _async(self) -> Any:
        if self._given_async is not None:
            return self._given_async
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            if self.url is None:
                raise ConfigurationError("RedisCache(client=...) needs async_client=... for async use")
            aio = self._redis.asyncio
            factory = aio.cluster.RedisCluster if self.cluster else aio.Redis
            client = self._async_clients[loop] = factory.from_url(self.url, **self._options())
        return client

    def close(self) -> None:
        """Close the blocking client tokenguard created."""
        if self._own_client and self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """Close the clients tokenguard created, including this loop's async one."""
        self.close()
        client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    # ------------------------------------------------------------------ health

    def _available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        now = time.monotonic()
        self._down_until = now + self.retry_interval
        if now - self._last_warning >= self.retry_interval:
            self._last_warning = now
            # The exception's class only: its text may carry the URL's password.
            logger.warning(
                "shared cache unreachable (%s); using the in-process cache for %.0f s",
                type(exc).__name__,
                self.retry_interval,
            )

    def _errors(self) -> tuple[type[BaseException], ...]:
        return (self._redis.exceptions.RedisError, OSError, asyncio.TimeoutError)

    # ------------------------------------------------------------------ values

    @staticmethod
    def _px(ttl: float) -> int:
        return max(1, int(ttl * 1000))

    # ------------------------------------------------------------------ blocking

    def get_sync(self, key: str) -> bytes | None:
        """The value at ``key``, or ``None`` (also when Redis is unreachable)."""
        if not self._available():
            return None
        try:
            value = self._sync().get(self.prefix + key)
        except self._errors() as exc:
            self._failed(exc)
            return None
        return value  # type: ignore[no-any-return]  # redis-py is untyped

    def set_sync(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds (silently skipped when Redis is unreachable)."""
        if ttl <= 0 or not self._available():
            return
        try:
            self._sync().set(self.prefix + key, value, px=self._px(ttl))
        except self._errors() as exc:
            self._failed(exc)

    def add_sync(self, key: str, value: bytes, ttl: float) -> bool:
        """Store ``value`` only if ``key`` is absent; ``True`` when stored or Redis is unreachable."""
        if not self._available():
            return True
        try:
            return bool(self._sync().set(self.prefix + key, value, px=self._px(ttl), nx=True))
        except self._errors() as exc:
            self._failed(exc)
            return True

    def delete_sync(self, key: str) -> None:
        """Remove ``key``."""
        if not self._available():
            return
        try:
            self._sync().delete(self.prefix + key)
        except self._errors() as exc:
            self._failed(exc)

    # ------------------------------------------------------------------ asyncio

    async def get(self, key: str) -> bytes | None:
        """Async twin of :meth:`get_sync`."""
        if not self._available():
            return None
        try:
            value = await self._async().get(self.prefix + key)
        except self._errors() as exc:
            self._failed(exc)
            return None
        return value  # type: ignore[no-any-return]  # redis-py is untyped

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Async twin of :meth:`set_sync`."""
        if ttl <= 0 or not self._available():
            return
        try:
            await self._async().set(self.prefix + key, value, px=self._px(ttl))
        except self._errors() as exc:
            self._failed(exc)

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Async twin of :meth:`add_sync`."""
        if not self._available():
            return True
        try:
            return bool(await self._async().set(self.prefix + key, value, px=self._px(ttl), nx=True))
        except self._errors() as exc:
            self._failed(exc)
            return True

    async def delete(self, key: str) -> None:
        """Async twin of :meth:`delete_sync`."""
        if not self._available():
            return
        try:
            await self._async().delete(self.prefix + key)
        except self._errors() as exc:
            self._failed(exc)


def _redact(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))
