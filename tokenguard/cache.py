"""Result caches, keyed by keyed hashes of tokens, never by tokens.

A verified JWT or an introspection answer is stored under
``HMAC-SHA256(hash_key, token)``: a cache dump (or a shared Redis) reveals no
token, and without the key nobody can test whether a given token is cached.
The key is random per process unless configured (needed when workers share a
cache).

Entries carry their own deadline; expired entries are never returned.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cachetools import TLRUCache

from .claims import TokenClaims

__all__ = ["CacheBackend", "CachedResult", "MemoryCache", "TokenHasher"]


class TokenHasher:
    """Computes cache keys and log fingerprints from tokens.

    Args:
        key: the HMAC key; 32 random bytes per process when ``None``.
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else os.urandom(32)

    def __repr__(self) -> str:
        return "TokenHasher(key=[secret])"

    def cache_key(self, token: str) -> bytes:
        """The 32-byte cache key for ``token``."""
        return hmac.digest(self._key, token.encode("utf-8", "surrogateescape"), "sha256")

    @staticmethod
    def fingerprint(cache_key: bytes) -> str:
        """A short, non-reversible label for logs: 8 hex digits of a hash of the key."""
        return hashlib.sha256(cache_key).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class CachedResult:
    """A cached verification outcome.

    ``claims`` is ``None`` for a cached rejection (``reason`` says why).
    ``valid_from``/``valid_until`` bound when the claims may be served: time
    checks are redone on every hit, whatever the cache's own TTL.
    ``key_thumbprint`` ties a JWT result to the key that verified it, so the
    entry dies with the key.
    """

    claims: TokenClaims | None
    cache_until: float
    valid_from: float = float("-inf")
    valid_until: float = float("inf")
    reason: str = ""
    issuer: str | None = None
    key_thumbprint: str | None = None


class CacheBackend(Protocol):
    """What the guard needs from a result cache."""

    def get(self, key: bytes) -> CachedResult | None:
        """The live entry for ``key``, or ``None``."""

    def set(self, key: bytes, value: CachedResult) -> None:
        """Store ``value`` until ``value.cache_until``."""

    def delete(self, key: bytes) -> None:
        """Forget ``key``."""

    def clear(self) -> None:
        """Forget everything."""


def _deadline(_key: bytes, value: CachedResult, _now: float) -> float:
    return value.cache_until


class MemoryCache:
    """An in-process LRU cache with per-entry deadlines (cachetools ``TLRUCache``).

    Args:
        maxsize: most entries kept; the least recently used go first.
        clock: the time source, in seconds; the guard passes its own.
    """

    def __init__(self, maxsize: int = 100_000, *, clock: Callable[[], float] | None = None) -> None:
        import time

        self._clock = clock or time.time
        self._data: TLRUCache[bytes, CachedResult] = TLRUCache(maxsize, _deadline, timer=self._clock)
        self._lock = threading.Lock()

    def get(self, key: bytes) -> CachedResult | None:
        with self._lock:
            return self._data.get(key)

    def set(self, key: bytes, value: CachedResult) -> None:
        if value.cache_until <= self._clock():
            return
        with self._lock:
            self._data[key] = value

    def delete(self, key: bytes) -> None:
        with self._lock:
            self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)
