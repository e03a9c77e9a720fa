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
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from ._hmac import KeyedHMAC
from .claims import TokenClaims

__all__ = ["CacheBackend", "CachedResult", "MemoryCache", "TokenHasher"]


class TokenHasher:
    """Computes cache keys (HMAC-SHA256) and log fingerprints from tokens.

    The HMAC's inner and outer SHA-256 states are keyed once and copied per
    token (RFC 2104 §4 suggests exactly this precomputation): the same result
    as ``hmac.digest(key, token, "sha256")`` at about half the cost, which
    matters because a cache key is computed on every request.

    Args:
        key: the HMAC key; 32 random bytes per process when ``None``.
    """

    __slots__ = ("_keyed",)

    def __init__(self, key: bytes | None = None) -> None:
        self._keyed = KeyedHMAC(key if key is not None else os.urandom(32))

    def __repr__(self) -> str:
        return "TokenHasher(key=[secret])"

    def keyed_states(self) -> tuple[Any, Any]:
        """The keyed inner and outer SHA-256 states, for callers that inline :meth:`cache_key`.

        Copy them before use; never update them.
        """
        return self._keyed.inner, self._keyed.outer

    def cache_key(self, token: str) -> bytes:
        """The 32-byte cache key for ``token``: HMAC-SHA256(key, token)."""
        return self._keyed.digest(token.encode("utf-8", "surrogateescape"))

    @staticmethod
    def fingerprint(cache_key: bytes) -> str:
        """A short, non-reversible label for logs: 8 hex digits of a hash of the key."""
        return hashlib.sha256(cache_key).hexdigest()[:8]


class HasThumbprints(Protocol):
    """Whatever knows the fingerprints of the keys an issuer trusts right now."""

    current_thumbprints: frozenset[str]


class CachedResult:
    """A cached verification outcome (read-only by convention; built once per miss).

    ``claims`` is ``None`` for a cached rejection (``reason`` says why).
    ``valid_from``/``valid_until`` bound when the claims may be served: time
    checks are redone on every hit, whatever the cache's own TTL.
    ``key_thumbprint`` ties a JWT result to the key that verified it, so the
    entry dies with the key; ``key_owner`` is where this process reads the
    currently trusted fingerprints (the issuer's JWKS source or static keys),
    set when the entry is stored or accepted from a shared store. A plain slotted class rather than a frozen
    dataclass: it is built on every cache miss, and frozen dataclasses pay for
    ``object.__setattr__`` per field.
    """

    __slots__ = (
        "cache_until",
        "claims",
        "issuer",
        "key_owner",
        "key_thumbprint",
        "reason",
        "valid_from",
        "valid_until",
    )

    def __init__(
        self,
        claims: TokenClaims | None,
        cache_until: float,
        valid_from: float = float("-inf"),
        valid_until: float = float("inf"),
        reason: str = "",
        issuer: str | None = None,
        key_thumbprint: str | None = None,
        key_owner: HasThumbprints | None = None,
    ) -> None:
        self.claims = claims
        self.cache_until = cache_until
        self.valid_from = valid_from
        self.valid_until = valid_until
        self.reason = reason
        self.issuer = issuer
        self.key_thumbprint = key_thumbprint
        self.key_owner = key_owner

    def __repr__(self) -> str:
        return f"CachedResult(claims={self.claims!r}, cache_until={self.cache_until!r}, reason={self.reason!r})"


class CacheBackend(Protocol):
    """What the guard needs from a result cache.

    ``get`` may return an entry whose ``cache_until`` has passed; the guard
    checks every entry's times against its own clock before using it.
    """

    def get(self, key: bytes) -> CachedResult | None:
        """The entry for ``key``, or ``None``."""

    def set(self, key: bytes, value: CachedResult) -> None:
        """Store ``value`` until ``value.cache_until``."""

    def delete(self, key: bytes) -> None:
        """Forget ``key``."""

    def clear(self) -> None:
        """Forget everything."""


class MemoryCache:
    """An in-process cache: bounded, with per-entry deadlines.

    One ``OrderedDict`` in insertion order: reads are a plain dict lookup with
    no lock (a locked lookup would cost most of a cache hit's budget); stores
    take a lock, move the key to the end, drop expired entries found at the
    front (at most two per store, which keeps up with uniform lifetimes) and
    evict the least recently *stored* entries beyond ``maxsize``. Expired
    entries elsewhere are dropped when read; the size bound holds regardless.
    This replaced a cachetools ``TLRUCache`` mirrored into a dict: the same
    semantics at about a third of the cost per store and ~300 bytes less per
    entry.

    Args:
        maxsize: most entries kept.
        clock: the time source, in seconds; the guard passes its own.
    """

    def __init__(self, maxsize: int = 100_000, *, clock: Callable[[], float] = time.time) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._clock = clock
        self._entries: OrderedDict[bytes, CachedResult] = OrderedDict()
        self._lock = threading.Lock()
        #: The entry for a key, or ``None``: the dict's own lookup, so a cache
        #: hit runs no Python frame here.
        self.get: Callable[[bytes], CachedResult | None] = self._entries.get

    def set(self, key: bytes, value: CachedResult) -> None:
        now = self._clock()
        if value.cache_until <= now:
            return
        with self._lock:
            entries = self._entries
            if key in entries:
                del entries[key]  # stored again: it moves to the end
            entries[key] = value
            for _ in range(2):
                oldest = next(iter(entries))
                if entries[oldest].cache_until > now:
                    break
                del entries[oldest]
            while len(entries) > self.maxsize:
                entries.popitem(last=False)

    def delete(self, key: bytes) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
