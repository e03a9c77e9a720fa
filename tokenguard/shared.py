"""A cache shared by many processes (Redis, Valkey): the contract, its effects, its wire format.

Strategy: the flows in ``guard.py`` and ``sources.py`` never call a shared
store. They *yield* the effects below (``SharedGet``, ``SharedSet``...), as
they yield HTTP requests, and the runners in ``_runner.py`` carry them out with
the store's blocking or asyncio methods. So the same flow serves WSGI and
ASGI, and a guard without a shared store pays nothing: the effects are not
even yielded.

What is shared, each under ``<prefix><kind>:<hex>``:

* ``r``: facts about tokens (see ``facts.py``), keyed by an HMAC of the
  token (never the token) under a key bound to who established the fact,
  stored for the fact's own lifetime;
* ``d``: fetched discovery and JWKS documents, keyed by a hash of their URL,
  stored for their ``Cache-Control`` freshness;
* ``l``: short locks (``SET NX PX``) so that concurrent misses in several
  processes make one upstream call: the others poll for its result.

A shared store must never make a request fail: every store method swallows
its own errors (returning "nothing there"/"lock taken by nobody"), and the
guard falls back to its in-process cache and the provider.

The wire format is compact JSON (no pickle: whoever can write to Redis must
not be able to run code here) inside an authenticated envelope
(:class:`SealedStore`, ``_envelope.py``): bound to its own key name and a
format version, with its creation time and lifetime, and encrypted when the
store has an encryption key.

What is shared are *facts*, never verdicts: the introspection answer as
received, "this JWT's signature verified with key T" with its header and
claims, a custom verifier's answer. Every reader re-applies its own policy
(audience, types, required claims, dates, revocation), so guards with
different policies may share a store and never accept a token on the
strength of each other's checks.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ._effects import Flow, HttpReply, SharedAdd, SharedDelete, SharedGet, SharedSet, SharedWait
from ._envelope import Envelope
from .cache import CachedResult
from .claims import TokenClaims
from .errors import ServiceUnavailable

__all__ = [
    "SharedAdd",
    "SealedStore",
    "SharedDelete",
    "SharedPolicy",
    "SharedGet",
    "SharedSet",
    "SharedStore",
    "SharedWait",
    "decode_reply",
    "decode_result",
    "document_key",
    "encode_reply",
    "encode_result",
    "lock_key",
    "publish_flow",
    "result_key",
    "shared_copy_flow",
    "shared_fetch_flow",
    "still_busy",
]

#: A waiter whose winner failed within this many seconds of its wait retries
#: the call itself; later, it answers 503 (:attr:`SharedWait.retry_budget`).
RETRY_BUDGET = SharedWait.retry_budget


@runtime_checkable
class SharedStore(Protocol):
    """A key-value store shared by processes, with per-key TTLs.

    Keys are short ASCII strings *without* the namespace prefix (the store
    adds it). Every method must swallow connection errors: ``get`` then
    returns ``None``, ``add`` returns ``True`` (nobody else can be
    coordinating through a store that is down, so the caller goes ahead).

    A store needs no cryptography of its own: the guard seals every value
    (:class:`SealedStore`). Two optional attributes feed that seal:
    ``prefix`` (the namespace, bound into each value's authentication) and
    ``encryption_keys`` (raw 32-byte AES keys, newest first; see
    :class:`~tokenguard.redis_cache.RedisCache`'s ``encryption_key``).
    """

    #: Seconds an entry read from or written to the store may live in the
    #: in-process cache in front of it (bounded by the entry's own lifetime).
    local_ttl: float
    #: Whether verified-JWT results are shared too (introspected ones always are).
    share_jwt_results: bool
    #: Lifetime of the lock that elects one process to call the provider.
    lock_ttl: float
    #: How long the other processes wait for that call's result.
    lock_wait: float

    def get_sync(self, key: str) -> bytes | None: ...
    def set_sync(self, key: str, value: bytes, ttl: float) -> None: ...
    def add_sync(self, key: str, value: bytes, ttl: float) -> bool: ...
    def delete_sync(self, key: str) -> None: ...
    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl: float) -> None: ...
    async def add(self, key: str, value: bytes, ttl: float) -> bool: ...
    async def delete(self, key: str) -> None: ...


class SealedStore:
    """A :class:`SharedStore` whose values are sealed on write and opened on read.

    Wraps the configured store (the guard builds one): values go through an
    :class:`~tokenguard._envelope.Envelope` bound to the full key name
    (``prefix`` included), with the guard's clock for creation and expiry.
    Locks (``add``) carry no meaning beyond their presence and stay plain.
    Anything that does not open (forged, moved, replayed, another key) reads
    as absent.
    """

    def __init__(self, store: SharedStore, envelope: Envelope, clock: Callable[[], float]) -> None:
        self.store = store
        self.envelope = envelope
        self.clock = clock
        self._prefix = str(getattr(store, "prefix", ""))
        self.local_ttl = store.local_ttl
        self.share_jwt_results = store.share_jwt_results
        self.lock_ttl = store.lock_ttl
        self.lock_wait = store.lock_wait

    def __repr__(self) -> str:
        return f"SealedStore({self.store!r}, {self.envelope!r})"

    def _open(self, key: str, data: bytes | None) -> bytes | None:
        if data is None or key.startswith(_LOCK):
            return data  # a lock: only its presence is read
        return self.envelope.open(self._prefix + key, data, self.clock())

    def _seal(self, key: str, value: bytes, ttl: float) -> bytes:
        return self.envelope.seal(self._prefix + key, value, self.clock(), ttl)

    def get_sync(self, key: str) -> bytes | None:
        return self._open(key, self.store.get_sync(key))

    def set_sync(self, key: str, value: bytes, ttl: float) -> None:
        if ttl > 0:
            self.store.set_sync(key, self._seal(key, value, ttl), ttl)

    def add_sync(self, key: str, value: bytes, ttl: float) -> bool:
        return self.store.add_sync(key, value, ttl)

    def delete_sync(self, key: str) -> None:
        self.store.delete_sync(key)

    async def get(self, key: str) -> bytes | None:
        return self._open(key, await self.store.get(key))

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if ttl > 0:
            await self.store.set(key, self._seal(key, value, ttl), ttl)

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        return await self.store.add(key, value, ttl)

    async def delete(self, key: str) -> None:
        await self.store.delete(key)


# ---------------------------------------------------------------------- keys


def result_key(cache_key: bytes) -> str:
    """Where a verification result lives (``cache_key`` is already an HMAC of the token)."""
    return "r:" + cache_key.hex()


def document_key(url: str) -> str:
    """Where a fetched document lives."""
    return "d:" + hashlib.sha256(url.encode()).hexdigest()[:32]


_LOCK = "l:"


def lock_key(key: str) -> str:
    """The lock that elects one process to fill ``key``."""
    return _LOCK + key


# ---------------------------------------------------------------------- effects
# SharedGet, SharedSet, SharedAdd, SharedDelete and SharedWait are pure data in
# ``_effects.py`` (re-exported here); ``_runner.py`` performs them.


def still_busy(what: str) -> ServiceUnavailable:
    """The error for a waiter whose winner is still calling the provider (or was slow to fail)."""
    return ServiceUnavailable(f"{what} still in progress in another process", retry_after=1, reason="lock_wait")


# ---------------------------------------------------------------------- wire format


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def encode_result(entry: CachedResult) -> bytes | None:
    """A cached result as compact JSON; ``None`` if its claims cannot be JSON (never shared then).

    The guard shares facts (``facts.py``), not results; this stays for
    stores and tools that persist a verdict of one guard for that guard.

    This is the reverse of :func:`decode_result`. Scopes are stored as
    computed, so a reader needs no knowledge of the issuer's scope claims.
    """
    claims = entry.claims
    document: dict[str, Any] = {
        "u": entry.cache_until,
        "f": _finite(entry.valid_from),
        "v": _finite(entry.valid_until),
    }
    if claims is None:
        document["r"] = entry.reason
    else:
        document["c"] = claims.to_dict()
        document["t"] = claims.token_type
        document["s"] = sorted(claims.scopes)
    if entry.issuer is not None:
        document["i"] = entry.issuer
    if entry.key_thumbprint is not None:
        document["k"] = entry.key_thumbprint
    try:
        return json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError):
        return None


def decode_result(data: bytes) -> CachedResult | None:
    """The reverse of :func:`encode_result`; ``None`` for anything malformed."""
    try:
        document = json.loads(data)
        cache_until = float(document["u"])
        valid_from = document.get("f")
        valid_until = document.get("v")
        claims = None
        if "c" in document:
            raw = document["c"]
            token_type = document["t"]
            scopes = document["s"]
            if (
                not isinstance(raw, dict)
                or token_type not in ("jwt", "opaque", "custom")
                or not isinstance(scopes, list)
                or not all(isinstance(s, str) for s in scopes)
            ):
                return None
            claims = TokenClaims(raw, token_type=token_type, scope_claims=())
            object.__setattr__(claims, "scopes", frozenset(scopes))
        issuer = document.get("i")
        thumbprint = document.get("k")
        return CachedResult(
            claims,
            cache_until,
            valid_from=float(valid_from) if valid_from is not None else float("-inf"),
            valid_until=float(valid_until) if valid_until is not None else float("inf"),
            reason=str(document.get("r", "")),
            issuer=issuer if isinstance(issuer, str) else None,
            key_thumbprint=thumbprint if isinstance(thumbprint, str) else None,
        )
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None


#: Response headers worth keeping with a shared document (they set its freshness).
_KEPT_HEADERS = ("cache-control", "age", "content-type")


def encode_reply(reply: HttpReply, now: float) -> bytes:
    """A fetched document with the headers that matter and when it was fetched."""
    headers = {name: reply.headers[name] for name in _KEPT_HEADERS if name in reply.headers}
    document = {"s": reply.status, "h": headers, "b": reply.body.decode("utf-8", "replace"), "t": now}
    return json.dumps(document, separators=(",", ":")).encode()


def decode_reply(data: bytes, now: float) -> tuple[HttpReply, float] | None:
    """The reverse of :func:`encode_reply`: the reply, aged by its time in the store, and its fetch time."""
    try:
        document = json.loads(data)
        fetched_at = float(document["t"])
        headers = {str(k): str(v) for k, v in document["h"].items()}
        stored_age = int(headers.get("age", "0")) if headers.get("age", "0").isdigit() else 0
        # RFC 9111 §4.2.3: a copy's age grows while it sits in a cache.
        headers["age"] = str(stored_age + max(0, int(now - fetched_at)))
        reply = HttpReply(int(document["s"]), headers, str(document["b"]).encode())
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None
    return reply, fetched_at


def fetched_after(moment: float | None) -> Callable[[bytes], bool]:
    """A :class:`SharedWait` predicate: the stored document was fetched after ``moment``."""

    def accept(data: bytes) -> bool:
        if moment is None:
            return True
        try:
            return float(json.loads(data)["t"]) > moment
        except (ValueError, TypeError, KeyError):
            return False

    return accept


# ---------------------------------------------------------------------- document flows


class SharedPolicy:
    """How a source coordinates fetches with other processes (from the store's settings)."""

    __slots__ = ("lock_ttl", "lock_wait")

    def __init__(self, lock_ttl: float, lock_wait: float) -> None:
        self.lock_ttl = lock_ttl
        self.lock_wait = lock_wait


def shared_copy_flow(name: str, now: float) -> Flow[tuple[HttpReply, float] | None]:
    """Another process's copy of document ``name``, aged by its time in the store, and its fetch time."""
    data = yield SharedGet(document_key(name))
    return decode_reply(data, now) if data is not None else None


def shared_fetch_flow(
    name: str,
    seen: float | None,
    now: float,
    policy: SharedPolicy,
    fetch: Callable[[], Flow[HttpReply]],
) -> Flow[tuple[HttpReply, bool, bool]]:
    """Fetch document ``name`` with ``fetch``, one process at a time.

    The process that takes the lock fetches; the others wait for a copy
    fetched after ``seen`` and use it. Returns the reply, whether the caller
    fetched it (and so should :func:`publish_flow` it), and whether it holds
    the lock (and so must release it there). A process that lost the election
    and fetched anyway (the winner failed fast) holds no lock: releasing one
    would free a lock another process may hold by now.
    """
    key = document_key(name)
    lock = lock_key(key)
    leader = yield SharedAdd(lock, policy.lock_ttl)
    if not leader:
        data, busy = yield SharedWait(key, lock, policy.lock_wait, fetched_after(seen))
        decoded = decode_reply(data, now) if data is not None else None
        if decoded is not None:
            return decoded[0], False, False
        if busy:
            raise still_busy("a fetch of this document")
    try:
        reply = yield from fetch()
    except ServiceUnavailable:
        if leader:
            yield SharedDelete(lock)
        raise
    return reply, True, leader


def publish_flow(name: str, reply: HttpReply, now: float, ttl: float, *, release: bool = True) -> Flow[None]:
    """Share a document that was fetched and accepted, then release its lock (when held)."""
    key = document_key(name)
    yield SharedSet(key, encode_reply(reply, now), ttl)
    if release:
        yield SharedDelete(lock_key(key))
