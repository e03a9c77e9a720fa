"""The two-level result store: verdicts in process, facts in the shared store.

Rule: a cached verdict is served only to the guard whose policy produced it;
what crosses processes is a policy-free fact that each reader re-checks.

* **In process** (:class:`~tokenguard.cache.CacheBackend`): verdicts, keyed by
  ``HMAC(verdict key, token)`` where the verdict key is derived from the hash
  key *and a fingerprint of the guard's policy* (issuers, audiences, token
  types, required claims, leeway, revocation, introspection endpoint and
  client, custom verifier). Two guards handed the same ``MemoryCache`` and
  ``hash_key`` but different policies therefore never find each other's
  entries; identical guards do. The hot path is unchanged: one keyed hash.
* **Shared** (:class:`~tokenguard.shared.SharedStore`, e.g. Redis): facts (see
  :mod:`tokenguard.facts`), each under ``r:`` + ``HMAC(fact key(scope), token)``
  where the scope names who established the fact (the JWT issuer and key
  source; the introspection endpoint and client; the custom verifier). Every
  value is sealed with its key name, format and lifetime
  (:class:`~tokenguard.shared.SealedStore`).
* **Locks**: ``l:`` + the fact key, so one process calls the provider while
  the others wait for its answer.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from ._effects import Flow
from ._hmac import KeyedHMAC
from .cache import CacheBackend, CachedResult, TokenHasher
from .facts import decode_fact
from .results import capped, serves
from .shared import SharedAdd, SharedDelete, SharedGet, SharedSet, SharedStore, SharedWait, lock_key, still_busy

#: ``serves`` and ``capped`` live in ``results.py``; re-exported for older imports.
__all__ = ["ResultStore", "capped", "policy_fingerprint", "serves"]

T = TypeVar("T")


def policy_fingerprint(parts: Iterable[object]) -> bytes:
    """A digest of everything that can change a verdict, for keying verdicts.

    ``parts`` are the reprs of the policy objects (frozen dataclasses, whose
    reprs list every field, so a field added later is covered too).
    """
    digest = hashlib.sha256(b"tokenguard policy v2")
    for part in parts:
        encoded = repr(part).encode("utf-8", "surrogateescape")
        digest.update(len(encoded).to_bytes(8, "big") + encoded)
    return digest.digest()


class ResultStore:
    """Verdicts in process, facts shared; the keys for both.

    Args:
        local: the in-process verdict cache.
        shared: the shared store, or ``None``.
        hash_key: the secret behind every key; random per process when ``None``
            (only workable without a shared store).
        policy: :func:`policy_fingerprint` of the owning guard.
    """

    __slots__ = ("_fact_hashers", "_facts_key", "leading", "local", "mac_key", "shared", "verdicts")

    def __init__(
        self, local: CacheBackend, shared: SharedStore | None, *, hash_key: bytes | None, policy: bytes
    ) -> None:
        secret = hash_key if hash_key is not None else os.urandom(32)
        self.local = local
        self.shared = shared
        #: Hashes tokens into in-process keys: bound to this guard's policy.
        self.verdicts = TokenHasher(hmac.digest(secret, b"tokenguard verdicts v2\0" + policy, "sha256"))
        self._facts_key = hmac.digest(secret, b"tokenguard facts v2", "sha256")
        self._fact_hashers: dict[str, KeyedHMAC] = {}
        #: The key authenticating shared values when there is no encryption key.
        self.mac_key = hmac.digest(secret, b"tokenguard shared-store MAC v2", "sha256")
        #: Shared-store locks this process holds (calls it leads).
        self.leading: set[str] = set()

    def __repr__(self) -> str:
        return f"ResultStore(local={type(self.local).__name__}, shared={self.shared!r}, keys=[secret])"

    # ------------------------------------------------------------------ in process

    def keep(self, cache_key: bytes, entry: CachedResult, now: float) -> None:
        """Keep a verdict in process under ``cache_key`` (for at most ``local_ttl`` in front of a shared store)."""
        shared = self.shared
        self.local.set(cache_key, entry if shared is None else capped(entry, now + shared.local_ttl))

    # ------------------------------------------------------------------ shared facts

    def fact_key(self, scope: str, token: str) -> str:
        """Where the fact established by ``scope`` about ``token`` lives (no token in it)."""
        hasher = self._fact_hashers.get(scope)
        if hasher is None:
            scoped = hmac.digest(self._facts_key, scope.encode("utf-8", "surrogateescape"), "sha256")
            hasher = self._fact_hashers[scope] = KeyedHMAC(scoped)
        return "r:" + hasher.digest(token.encode("utf-8", "surrogateescape")).hex()

    def read_fact(self, key: str, kind: str) -> Flow[dict[str, Any] | None]:
        """The fact of ``kind`` at ``key``, or ``None`` (absent, unsealed, malformed, another kind)."""
        data = yield SharedGet(key)
        return decode_fact(data, kind) if data is not None else None

    def write_fact(self, key: str, fact: bytes | None, lifetime: float) -> Flow[None]:
        """Share ``fact`` for ``lifetime`` seconds (nothing when it is ``None`` or already dead)."""
        if fact is not None and lifetime > 0:
            yield SharedSet(key, fact, lifetime)

    def release(self, key: str) -> Flow[None]:
        """Free the lock this process holds for ``key``."""
        lock = lock_key(key)
        self.leading.discard(lock)
        yield SharedDelete(lock)

    def forget_lock(self, key: str) -> None:
        """Stop counting ``key``'s lock as held (a cancelled flow, which may yield
        nothing more: the lock expires in the store by itself)."""
        self.leading.discard(lock_key(key))

    def lead_or_wait(
        self, key: str, kind: str, accept: Callable[[dict[str, Any]], T | None], deadline: float
    ) -> Flow[tuple[bool, T | None]]:
        """Elect one process to establish the fact at ``key`` (one upstream call for all).

        Returns whether this caller leads (and must :meth:`release` the lock once
        its fact is written or its call failed), and a fact another process
        established meanwhile, as ``accept`` reads it, if any.

        Raises:
            ServiceUnavailable: the elected process is still calling when the
                wait ends (``lock_wait``, never past ``deadline``), or was slow
                to fail: the provider is slow, and a second call would only add load.
        """
        shared = self.shared
        assert shared is not None
        lock = lock_key(key)
        if lock in self.leading:
            # Another thread or task of this process holds the lock: the
            # in-process coalescer joins its call, no need to poll the store.
            return False, None
        if (yield SharedAdd(lock, shared.lock_ttl)):
            self.leading.add(lock)
            # Double-checked: a winner may have stored its fact and released
            # the lock between the caller's first read and this lock.
            fact = yield from self.read_fact(key, kind)
            found = accept(fact) if fact is not None else None
            if found is not None:
                yield from self.release(key)
                return False, found
            return True, None
        data, busy = yield SharedWait(key, lock, min(shared.lock_wait, deadline))
        fact = decode_fact(data, kind) if data is not None else None
        found = accept(fact) if fact is not None else None
        if found is not None:
            return False, found
        if busy:
            raise still_busy(f"a {kind} call for this token")
        return False, None
