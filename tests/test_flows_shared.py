"""Shared-store elections for discovery and JWKS documents, driven by hand: no Redis, no sockets.

With a shared store, a source first looks for another process's copy
(``SharedGet``), then takes a lock (``SharedAdd``): the winner fetches and
publishes (``SharedSet`` then ``SharedDelete`` of the lock), the others wait
(``SharedWait``) for a copy fetched after the one they had. Each test plays
the store's part and checks the effects in order. The same elections against
real Redis servers are in test_shared_cache.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from tokenguard import Introspection, TokenGuard
from tokenguard._runner import perform_shared, perform_shared_sync
from tokenguard.errors import ServiceUnavailable
from tokenguard.shared import (
    SharedAdd,
    SharedDelete,
    SharedGet,
    SharedPolicy,
    SharedSet,
    SharedWait,
    decode_reply,
    document_key,
    encode_reply,
    lock_key,
)
from tokenguard.sources import FetchSettings, JWKSSource, MetadataSource

from .flowkit import Step, canned, ec_jwk, forbid_network


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_network(monkeypatch)


ISSUER = "https://idp.test"
JWKS_URI = "https://idp.test/jwks"
WELL_KNOWN = "https://idp.test/.well-known/oauth-authorization-server"
T0 = 1_800_000_000.0
POLICY = SharedPolicy(lock_ttl=5.0, lock_wait=2.0)
#: Shared per issuer and discovery URL(s): an issuer may publish several documents.
DOC_KEY = document_key("\0".join(("metadata " + ISSUER, *MetadataSource(ISSUER, FetchSettings()).urls)))
LOCK = lock_key(DOC_KEY)
META = {"issuer": ISSUER, "jwks_uri": JWKS_URI}


def shared_metadata() -> MetadataSource:
    source = MetadataSource(ISSUER, FetchSettings())
    source.shared = POLICY
    return source


def stored(document: object, fetched_at: float, headers: dict[str, str] | None = None) -> bytes:
    """What another process left in the store after fetching ``document`` at ``fetched_at``."""
    return encode_reply(canned(200, document, headers), fetched_at)


def test_the_process_that_wins_the_lock_fetches_and_publishes() -> None:
    """No copy, lock won: fetch, store the document for its freshness, then release the lock."""
    source = shared_metadata()
    step = Step(source.metadata_flow(T0))
    step.store(SharedGet, DOC_KEY)
    step.answer(None)
    add = step.store(SharedAdd, LOCK)
    assert add.ttl == POLICY.lock_ttl
    step.answer(True)
    step.request("GET", WELL_KNOWN)
    step.reply(200, META, {"Cache-Control": "max-age=900"})
    published = step.store(SharedSet, DOC_KEY)
    assert published.ttl == 900
    decoded = decode_reply(published.value, T0)
    assert decoded is not None and decoded[1] == T0 and json.loads(decoded[0].body) == META
    step.answer(None)
    step.store(SharedDelete, LOCK)
    step.answer(None)
    assert step.result() == META
    assert source.state.fresh_until == T0 + 900


def test_a_process_that_loses_the_lock_waits_and_uses_the_winners_copy() -> None:
    """Lock lost: wait for a copy fetched after ours, use it, and make no HTTP request."""
    source = shared_metadata()
    step = Step(source.metadata_flow(T0))
    step.store(SharedGet, DOC_KEY)
    step.answer(None)
    step.store(SharedAdd, LOCK)
    step.answer(False)
    wait = step.store(SharedWait, DOC_KEY)
    assert wait.lock == LOCK and wait.timeout == POLICY.lock_wait
    step.answer((stored(META, T0 + 0.5, {"Cache-Control": "max-age=600"}), False))
    assert step.result() == META
    assert not any(isinstance(effect, SharedSet | SharedDelete) for effect in step.effects)
    assert source.state.is_fresh(T0 + 599)


def test_a_loser_whose_wait_ends_empty_fetches_itself() -> None:
    """The winner failed fast (the wait gives nothing, the lock is gone): fetch from the network."""
    step = Step(shared_metadata().metadata_flow(T0))
    step.answer(None)
    step.answer(False)
    step.store(SharedWait)
    step.answer((None, False))
    step.request("GET", WELL_KNOWN)
    step.reply(200, META)
    assert isinstance(step.effect, SharedSet)


def test_a_loser_that_fetched_itself_shares_its_copy_but_releases_no_lock() -> None:
    """It never held the lock: deleting it would free the lock of whichever process holds it now."""
    step = Step(shared_metadata().metadata_flow(T0))
    step.answer(None)
    step.store(SharedAdd, LOCK)
    step.answer(False)
    step.store(SharedWait)
    step.answer((None, False))
    step.request("GET", WELL_KNOWN)
    step.reply(200, META)
    step.store(SharedSet, DOC_KEY)
    assert step.answer(None).result() == META
    assert not any(isinstance(effect, SharedDelete) for effect in step.effects)


def test_the_winner_shares_its_copy_then_releases_its_lock() -> None:
    """The process that took the lock publishes the document, then deletes the lock."""
    step = Step(shared_metadata().metadata_flow(T0))
    step.answer(None)
    step.store(SharedAdd, LOCK)
    step.answer(True)
    step.request("GET", WELL_KNOWN)
    step.reply(200, META)
    step.store(SharedSet, DOC_KEY)
    step.answer(None)
    step.store(SharedDelete, LOCK)
    assert step.answer(None).result() == META


def test_a_fresh_copy_from_another_process_is_used_before_any_lock() -> None:
    """Another process's copy, newer than ours: no lock, no HTTP."""
    source = shared_metadata()
    step = Step(source.metadata_flow(T0))
    step.store(SharedGet, DOC_KEY)
    step.answer(stored(META, T0 - 10, {"Cache-Control": "max-age=600"}))
    assert step.result() == META
    assert len(step.effects) == 1
    # RFC 9111 §4.2.3: the copy aged 10 s in the store, so it is fresh 10 s less.
    assert source.state.fresh_until == T0 + 590


@pytest.mark.parametrize(
    "copy",
    [
        stored({"issuer": "https://evil.test", "jwks_uri": "https://evil.test/jwks"}, T0 - 1),
        stored([1, 2], T0 - 1),
        encode_reply(canned(500, META), T0 - 1),
        b"not json at all",
        b'{"s": 200}',
    ],
)
def test_a_bad_copy_in_the_store_is_ignored(copy: bytes) -> None:
    """A copy naming another issuer, not an object, an error reply or garbage: the election goes on."""
    step = Step(shared_metadata().metadata_flow(T0))
    step.store(SharedGet)
    step.answer(copy)
    step.store(SharedAdd, LOCK)
    step.answer(True)
    step.request("GET", WELL_KNOWN)


def test_a_loser_only_accepts_a_copy_fetched_after_the_one_it_had() -> None:
    """The wait's predicate refuses copies not newer than the document the process already holds."""
    source = shared_metadata()
    Step(source.metadata_flow(T0)).answer(None).answer(True).reply(200, META).answer(None).answer(None)
    later = T0 + 10_000  # stale now
    step = Step(source.metadata_flow(later))
    step.store(SharedGet)
    step.answer(stored(META, T0))  # the very copy we fetched: not newer, so not used
    step.store(SharedAdd)
    step.answer(False)
    wait = step.store(SharedWait)
    assert not wait.accept(stored(META, T0))
    assert not wait.accept(b"garbage")
    assert wait.accept(stored(META, T0 + 1))


def test_the_winner_releases_the_lock_when_its_fetch_fails() -> None:
    """A failed fetch deletes the lock at once, so other processes need not wait out its TTL."""
    source = shared_metadata()
    step = Step(source.metadata_flow(T0))
    step.answer(None)
    step.answer(True)
    step.reply(500)
    step.store(SharedDelete, LOCK)
    with pytest.raises(ServiceUnavailable):
        step.answer(None)
    assert source.state.failures == 1


def test_jwks_copy_without_the_kid_leads_to_an_election_for_a_newer_one() -> None:
    """A shared key set that lacks the token's kid is not enough: wait only for a newer copy."""
    source = JWKSSource(FetchSettings(), jwks_uri=JWKS_URI)
    source.shared = POLICY
    step = Step(source.keys_flow("new", T0))
    step.store(SharedGet, document_key(JWKS_URI))
    step.answer(stored({"keys": [ec_jwk("old")]}, T0 - 5))
    step.store(SharedAdd, lock_key(document_key(JWKS_URI)))
    step.answer(False)
    wait = step.store(SharedWait)
    assert not wait.accept(stored({"keys": [ec_jwk("old")]}, T0 - 5))
    assert wait.accept(stored({"keys": [ec_jwk("new")]}, T0 - 1))
    step.answer((stored({"keys": [ec_jwk("new")]}, T0 - 1), False))
    assert step.result().has_kid("new")


class DictStore:
    """A shared store in a dict (no TTLs), enough to run SharedWait's own loop."""

    local_ttl = 30.0
    share_jwt_results = False
    lock_ttl = 5.0
    lock_wait = 2.0

    def __init__(self, **values: bytes) -> None:
        self.values: dict[str, bytes] = dict(values)
        self.reads = 0
        self.locks: list[str] = []

    def get_sync(self, key: str) -> bytes | None:
        self.reads += 1
        return self.values.get(key)

    def set_sync(self, key: str, value: bytes, ttl: float) -> None:
        self.values[key] = value

    def add_sync(self, key: str, value: bytes, ttl: float) -> bool:
        return self.values.setdefault(key, value) is value

    def delete_sync(self, key: str) -> None:
        self.values.pop(key, None)

    async def get(self, key: str) -> bytes | None:
        return self.get_sync(key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self.set_sync(key, value, ttl)

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        return self.add_sync(key, value, ttl)

    async def delete(self, key: str) -> None:
        self.delete_sync(key)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"d": b"copy", "l": b"1"}, (b"copy", False)),  # the winner's copy is there
        ({}, (None, False)),  # no copy and no lock: the winner gave up fast, stop waiting at once
        ({"d": b"copy"}, (b"copy", False)),  # stored, then the lock released: both read
    ],
)
def test_shared_wait_returns_without_waiting_out_its_timeout(values: dict[str, bytes], expected: Any) -> None:
    """The runners end a SharedWait as soon as the copy is there or the lock is gone; never sit out its timeout."""
    wait = SharedWait("d", "l", timeout=30.0)
    store = DictStore(**values)
    assert perform_shared_sync(wait, store) == expected  # (value, busy): the lock is gone or the copy is there
    assert store.reads <= 3  # one look, no polling: a poll every 20 ms would read hundreds of times

    async def run() -> tuple[Any, int]:
        store = DictStore(**values)
        return await perform_shared(wait, store), store.reads

    value, reads = asyncio.run(run())
    assert value == expected and reads <= 3


# ------------------------------------------------------------------ guard-level elections, in memory


INTROSPECT = "https://idp.test/introspect"


class ElectionWorld:
    """Guards ("processes") sharing one in-memory store, their introspection endpoint in memory too."""

    def __init__(self, store: DictStore) -> None:
        self.store = store
        self.calls = 0
        self.clients: list[httpx.Client] = []

    def answer(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        return httpx.Response(200, json={"active": True, "sub": "u1", "scope": "read", "exp": time.time() + 300})

    def guard(self) -> TokenGuard:
        client = httpx.Client(transport=httpx.MockTransport(self.answer))
        self.clients.append(client)
        return TokenGuard(
            introspection=Introspection(endpoint=INTROSPECT, client_id="rs", client_secret="pw"),
            cache=self.store,
            http_client=client,
        )

    def close(self) -> None:
        for client in self.clients:
            client.close()


def test_a_result_introspected_by_one_guard_serves_another_without_a_call() -> None:
    """The winner's introspection is shared: a second process finds it in the store and asks no one."""
    world = ElectionWorld(DictStore())
    first, second = world.guard(), world.guard()
    assert first.verify_sync("opaque-1").subject == "u1"
    assert world.calls == 1
    assert not any(key.startswith("l:") for key in world.store.values)  # the lock was released
    claims = second.verify_sync("opaque-1")
    assert claims.subject == "u1" and claims.scopes == {"read"}
    assert world.calls == 1
    world.close()


def test_a_guard_that_finds_the_lock_taken_waits_then_answers_503() -> None:
    """Another process holds the lock and never stores a result: after lock_wait the
    guard answers 503 with Retry-After (the provider is slow; a second call would only add load)."""

    class LockedStore(DictStore):
        lock_wait = 0.05

        def add_sync(self, key: str, value: bytes, ttl: float) -> bool:
            self.locks.append(key)
            self.values.setdefault(key, value)
            return False  # someone else won every election

    store = LockedStore()
    world = ElectionWorld(store)
    with pytest.raises(ServiceUnavailable, match="in progress in another process") as busy:
        world.guard().verify_sync("opaque-2")
    assert busy.value.reason == "lock_wait" and busy.value.retry_after == 1
    assert world.calls == 0
    assert len(store.locks) == 1 and store.locks[0].startswith("l:r:")  # it stood for election, and lost
    assert store.reads > 3  # and polled the store while the lock holder had a chance to answer
    world.close()


def test_async_guards_share_through_the_store_too() -> None:
    """The asyncio runner performs the same store effects: the second guard makes no call."""
    world = ElectionWorld(DictStore())

    async def main() -> list[str | None]:
        subjects = []
        for _ in range(2):
            async with httpx.AsyncClient(transport=httpx.MockTransport(world.answer)) as client:
                guard = TokenGuard(
                    introspection=Introspection(endpoint=INTROSPECT, client_id="rs", client_secret="pw"),
                    cache=world.store,
                    async_http_client=client,
                )
                subjects.append((await guard.verify("opaque-3")).subject)
        return subjects

    assert asyncio.run(main()) == ["u1", "u1"]
    assert world.calls == 1


# ------------------------------------------------------------------ SharedWait is pure data


@pytest.mark.parametrize(
    ("value", "held", "waited", "expected"),
    [
        (b"copy", True, 0.0, (b"copy", False)),  # the winner's answer, whatever the lock says
        (None, False, 0.1, (None, False)),  # the winner failed fast: the caller may ask itself
        (None, False, 1.5, (None, True)),  # the winner was slow to fail: answer 503, add no load
        (None, True, 2.0, (None, True)),  # still calling at the end of the wait: 503
        (b"old", False, 0.1, (None, False)),  # a value the predicate refuses is no answer
    ],
)
def test_shared_wait_decides_without_io(value: bytes | None, held: bool, waited: float, expected: Any) -> None:
    """What a wait ends with is decided by SharedWait itself, from what the runner read; the
    runner only polls and sleeps."""
    wait = SharedWait("d", "l", timeout=2.0, accept=lambda data: data != b"old")
    assert wait.outcome(value, held, waited) == expected
    assert wait.gives_up(held=False, waited=0.0)  # the lock is gone: nobody will answer
    assert wait.gives_up(held=True, waited=2.0)  # out of time
    assert not wait.gives_up(held=True, waited=1.0)
    assert not hasattr(wait, "run_sync") and not hasattr(wait, "run")  # nothing here performs I/O
