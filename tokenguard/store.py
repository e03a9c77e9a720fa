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
from collections.abc import Iterable
from typing import Any

from ._hmac import KeyedHMAC
from ._http import Flow
from .cache import CacheBackend, CachedResult, TokenHasher
from .facts import decode_fact
from .shared import SharedDelete, SharedGet, SharedSet, SharedStore, lock_key

__all__ = ["ResultStore", "policy_fingerprint", "serves"]


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

    def keep(self, key: bytes, entry: CachedResult, now: float) -> None:
        """Keep a verdict in process (for at most ``local_ttl`` in front of a shared store)."""
        shared = self.shared
        self.local.set(key, entry if shared is None else capped(entry, now + shared.local_ttl))

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


def serves(entry: CachedResult, now: float) -> bool:
    """Whether a positive entry may answer now: inside its lifetime and time
    window, and, for a JWT, its key still trusted (an empty set of trusted
    fingerprints: this process has not loaded the keys yet, so the entry came
    from the shared store; local results load them). The hit in
    :meth:`TokenGuard.verify_sync` and :meth:`TokenGuard.verify` is this,
    inlined."""
    if not (now < entry.cache_until and entry.valid_from <= now < entry.valid_until):
        return False
    owner = entry.key_owner
    if owner is None:
        return entry.key_thumbprint is None  # not a JWT: no key to outlive
    return entry.key_thumbprint in owner.current_thumbprints or not owner.current_thumbprints


def capped(entry: CachedResult, until: float) -> CachedResult:
    """``entry`` with its cache lifetime cut to ``until`` (the in-process level in front of a shared store)."""
    if entry.cache_until <= until:
        return entry
    return CachedResult(
        entry.claims,
        until,
        valid_from=entry.valid_from,
        valid_until=entry.valid_until,
        reason=entry.reason,
        issuer=entry.issuer,
        key_thumbprint=entry.key_thumbprint,
        key_owner=entry.key_owner,
    )
