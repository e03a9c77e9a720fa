"""Shared entries are sealed with their key name, format and lifetime: a Redis writer
without our keys can cause misses, never an acceptance."""

from __future__ import annotations

import time
from typing import Any

import pytest
from cryptography.fernet import Fernet
from hypothesis import given
from hypothesis import strategies as st

from tokenguard import InvalidToken, TokenGuard
from tokenguard._envelope import MAX_CLOCK_SKEW, Envelope, aead_keys_of
from tokenguard.errors import ConfigurationError
from tokenguard.redis_cache import RedisCache
from tokenguard.testing import LocalIssuer

from .conftest import RedisServer
from .flavours import verify
from .helpers import Clock

HASH_KEY = b"h" * 32
MAC = Envelope(mac_key=b"m" * 32)
AEAD = Envelope(aead_keys=aead_keys_of(Fernet.generate_key()), mac_key=b"m" * 32)

# ---------------------------------------------------------------------- the envelope alone


@pytest.mark.parametrize("envelope", [MAC, AEAD], ids=["mac", "aead"])
def test_envelope_round_trip_and_refusals(envelope: Envelope) -> None:
    """An entry opens under its own name within its lifetime; moved, altered, expired or future: refused."""
    sealed = envelope.seal("tokenguard:r:aa", b"value", 1000.0, 60.0)
    assert envelope.open("tokenguard:r:aa", sealed, 1000.0) == b"value"
    assert envelope.open("tokenguard:r:aa", sealed, 1059.9) == b"value"
    assert envelope.open("tokenguard:r:bb", sealed, 1000.0) is None  # copied onto another key
    assert envelope.open("other:r:aa", sealed, 1000.0) is None  # another prefix
    assert envelope.open("tokenguard:r:aa", sealed, 1060.0) is None  # past its lifetime: a replay
    assert envelope.open("tokenguard:r:aa", sealed, 1000.0 - MAX_CLOCK_SKEW - 1) is None  # "created" in the future
    for position in range(len(sealed)):
        altered = bytearray(sealed)
        altered[position] ^= 0x01
        assert envelope.open("tokenguard:r:aa", bytes(altered), 1000.0) is None


def test_encrypted_envelope_hides_the_value_and_refuses_a_downgrade() -> None:
    """With encryption keys the value is unreadable, and a MAC-only entry is not accepted."""
    sealed = AEAD.seal("k", b"alice-the-subject", 0.0, 10.0)
    assert b"alice" not in sealed
    assert AEAD.open("k", MAC.seal("k", b"x", 0.0, 10.0), 0.0) is None
    assert MAC.open("k", sealed, 0.0) is None


def test_key_rotation_reads_old_entries() -> None:
    """Entries sealed with the previous key still open while it is configured second."""
    old, new = Fernet.generate_key(), Fernet.generate_key()
    before = Envelope(aead_keys=aead_keys_of(old), mac_key=b"")
    after = Envelope(aead_keys=aead_keys_of([new, old]), mac_key=b"")
    assert after.open("k", before.seal("k", b"v", 0.0, 10.0), 1.0) == b"v"
    assert Envelope(aead_keys=aead_keys_of(new), mac_key=b"").open("k", before.seal("k", b"v", 0.0, 10.0), 1.0) is None


@pytest.mark.parametrize("bad", ["", "short", b"x" * 44, [], ["!" * 44]])
def test_bad_encryption_keys_are_configuration_errors(bad: Any) -> None:
    """Keys that are not 32 bytes of URL-safe base64 are refused at construction, naming the option."""
    with pytest.raises(ConfigurationError, match="encryption_key"):
        aead_keys_of(bad)


@given(st.binary(max_size=200), st.text(max_size=40), st.floats(allow_nan=True))
def test_open_never_raises(data: bytes, name: str, now: float) -> None:
    """Any bytes under any name, at any time: a value or None, never an exception."""
    for envelope in (MAC, AEAD):
        assert envelope.open(name, data, now) is None or isinstance(envelope.open(name, data, now), bytes)


@given(st.binary(max_size=500), st.text(min_size=1, max_size=40), st.floats(min_value=0, max_value=2e9))
def test_seal_open_round_trip(value: bytes, name: str, now: float) -> None:
    """Whatever is sealed opens unchanged under its own name, and only there."""
    for envelope in (MAC, AEAD):
        sealed = envelope.seal(name, value, now, 30.0)
        assert envelope.open(name, sealed, now + 1) == value
        assert envelope.open(name + "x", sealed, now + 1) is None


# ---------------------------------------------------------------------- against redis-server


def worker(issuer: LocalIssuer, redis_server: RedisServer, **options: Any) -> TokenGuard:
    store_options = {k: options.pop(k) for k in list(options) if k in ("encryption_key", "prefix")}
    options.setdefault("hash_key", HASH_KEY)
    return issuer.guard(cache=RedisCache(redis_server.url, **store_options), **options)


def fact_key(guard: TokenGuard, token: str) -> str:
    """Where ``guard`` keeps the introspection answer about ``token`` (Redis prefix included)."""
    return "tokenguard:" + guard._store.fact_key(guard._introspection_scope, token)



@pytest.mark.integration
@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("encrypted", [True, False], ids=["aead", "mac"])
def test_a_victims_entry_copied_onto_a_made_up_token_is_a_miss(
    issuer: LocalIssuer, redis_server: RedisServer, encrypted: bool, flavour: str
) -> None:
    """r.set(mine, r.get(victims)): the made-up token is introspected (and refused), never accepted."""
    options = {"encryption_key": Fernet.generate_key()} if encrypted else {}
    victim_token = issuer.issue_opaque(subject="victim")
    writer = worker(issuer, redis_server, **options)
    assert verify(writer, victim_token, flavour).subject == "victim"
    client = redis_server.client()
    made_up = "made-up-token-0123456789"
    client.set(fact_key(writer, made_up), client.get(fact_key(writer, victim_token)))
    reader = worker(issuer, redis_server, **options)
    with pytest.raises(InvalidToken, match="not active"):
        verify(reader, made_up, flavour)
    assert issuer.requests["/introspect"] == 2  # the victim's, then the made-up token's: a miss
    assert reader.stats["shared_cache_miss"] >= 1


@pytest.mark.integration
def test_a_forged_plain_entry_is_a_miss(issuer: LocalIssuer, redis_server: RedisServer) -> None:
    """A well-formed but unsealed fact planted by a Redis writer is ignored."""
    guard = worker(issuer, redis_server)
    token = "planted-token-abcdefghijkl"
    planted = b'{"f":2,"k":"introspection","a":{"active":true,"sub":"admin"},"r":%d}' % int(time.time())
    redis_server.client().set(fact_key(guard, token), planted)
    with pytest.raises(InvalidToken, match="not active"):
        guard.verify_sync(token)
    assert issuer.requests["/introspect"] == 1


@pytest.mark.integration
def test_an_entry_moved_to_another_prefix_is_a_miss(issuer: LocalIssuer, redis_server: RedisServer) -> None:
    """Two APIs on one Redis under different prefixes: an entry copied across does not open."""
    token = issuer.issue_opaque()
    first = worker(issuer, redis_server, prefix="first:")
    first.verify_sync(token)
    client = redis_server.client()
    (key,) = client.keys("first:r:*")
    client.set(b"second:" + key[len(b"first:") :], client.get(key))
    second = worker(issuer, redis_server, prefix="second:")
    second.verify_sync(token)
    assert issuer.requests["/introspect"] == 2
    assert second.stats.get("shared_cache_hit", 0) == 0


@pytest.mark.integration
@pytest.mark.parametrize("encrypted", [True, False], ids=["aead", "mac"])
def test_replayed_jwks_a_day_later_is_refetched(
    issuer: LocalIssuer, redis_server: RedisServer, encrypted: bool
) -> None:
    """Saved JWKS and discovery entries planted back after the key was withdrawn are misses:
    a fresh worker fetches, and no longer trusts the withdrawn key."""
    options = {"encryption_key": Fernet.generate_key()} if encrypted else {}
    old_token = issuer.issue(expires_in=3 * 86400)
    first = worker(issuer, redis_server, **options)
    first.verify_sync(old_token)
    client = redis_server.client()
    saved = {key: client.get(key) for key in client.keys("tokenguard:d:*")}
    assert len(saved) == 2  # discovery and JWKS
    assert issuer.requests["/jwks"] == 1
    # The key is withdrawn; a day later the attacker plants the old copies back.
    old_kid = issuer.key("RS256").kid
    issuer.rotate("RS256")
    issuer.remove_key(old_kid)
    client.flushall()
    for key, value in saved.items():
        client.set(key, value)
    clock = Clock()
    clock.now += 86400
    fresh = worker(issuer, redis_server, clock=clock, **options)
    with pytest.raises(InvalidToken, match="unknown signing key"):
        fresh.verify_sync(old_token)
    assert issuer.requests["/jwks"] == 2
    assert issuer.requests["/.well-known/openid-configuration"] == 2
    assert fresh.verify_sync(issuer.issue(expires_in=3 * 86400)).subject == "user-1"  # the current key works


@pytest.mark.integration
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_replayed_active_answer_after_revocation_is_a_miss(
    issuer: LocalIssuer, redis_server: RedisServer, flavour: str
) -> None:
    """An "active" answer saved before revocation and planted back past its lifetime is not served."""
    token = issuer.issue_opaque(expires_in=3600)
    writer = worker(issuer, redis_server)
    verify(writer, token, flavour)
    client = redis_server.client()
    key = fact_key(writer, token)
    saved = client.get(key)
    issuer.revoke(token)
    client.flushall()
    client.set(key, saved)  # no expiry in Redis: only the entry's own lifetime can stop it
    clock = Clock()
    clock.now += 120  # past the 60 s introspection cache lifetime
    reader = worker(issuer, redis_server, clock=clock)
    with pytest.raises(InvalidToken, match="not active"):
        verify(reader, token, flavour)
    assert issuer.requests["/introspect"] == 2
