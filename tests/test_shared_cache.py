"""The shared cache against a real redis-server: two guards stand for two workers."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest
from cryptography.fernet import Fernet

from tokenguard import InvalidToken, TokenGuard
from tokenguard.cache import CachedResult
from tokenguard.claims import TokenClaims
from tokenguard.redis_cache import RedisCache
from tokenguard.shared import decode_result, encode_result
from tokenguard.testing import Fault, LocalIssuer

from .conftest import RedisServer

pytestmark = pytest.mark.integration

HASH_KEY = b"h" * 32


def worker(issuer: LocalIssuer, redis_server: RedisServer, **options: Any) -> TokenGuard:
    """A guard as one worker process would build it (own memory cache, own coalescers)."""
    store_options = {
        k: options.pop(k) for k in list(options) if k in ("encryption_key", "share_jwt_results", "lock_wait")
    }
    store = RedisCache(redis_server.url, **store_options)
    options.setdefault("hash_key", HASH_KEY)
    return issuer.guard(cache=store, **options)


def all_keys(redis_server: RedisServer) -> dict[bytes, bytes]:
    client = redis_server.client()
    return {key: client.get(key) for key in client.keys("*")}


def test_two_workers_share_an_introspection_result(issuer: LocalIssuer, store_server: RedisServer) -> None:
    token = issuer.issue_opaque(scope="read")
    first, second = worker(issuer, store_server), worker(issuer, store_server)
    assert first.verify_sync(token).subject == "user-1"
    assert issuer.requests["/introspect"] == 1
    claims = second.verify_sync(token)
    assert claims.subject == "user-1"
    assert claims.scopes == {"read"}
    assert claims.token_type == "opaque"
    assert issuer.requests["/introspect"] == 1, "the second worker must not introspect again"
    assert second.stats["shared_cache_hit"] == 1
    # Then its own in-process cache answers: no further Redis read.
    second.verify_sync(token)
    assert second.stats["shared_cache_hit"] == 1
    assert second.stats["cache_hit"] == 1


def test_async_workers_share_results(issuer: LocalIssuer, store_server: RedisServer) -> None:
    token = issuer.issue_opaque(scope="read write")

    async def run() -> tuple[TokenClaims, TokenClaims]:
        first, second = worker(issuer, store_server), worker(issuer, store_server)
        try:
            return await first.verify(token), await second.verify(token)
        finally:
            await first.aclose()
            await second.aclose()

    a, b = asyncio.run(run())
    assert a == b
    assert b.scopes == {"read", "write"}
    assert issuer.requests["/introspect"] == 1


def test_inactive_answers_are_shared_for_the_negative_ttl(issuer: LocalIssuer, redis_server: RedisServer) -> None:
    token = issuer.issue_opaque()
    issuer.revoke(token)
    first, second = worker(issuer, redis_server), worker(issuer, redis_server)
    with pytest.raises(InvalidToken, match="not active"):
        first.verify_sync(token)
    with pytest.raises(InvalidToken, match="not active"):
        second.verify_sync(token)
    assert issuer.requests["/introspect"] == 1
    client = redis_server.client()
    (key,) = client.keys("tokenguard:r:*")
    assert 0 < client.pttl(key) <= 10_000  # Introspection.negative_ttl


def test_redis_ttl_follows_the_cache_ttl_and_exp(issuer: LocalIssuer, redis_server: RedisServer) -> None:
    long_lived = issuer.issue_opaque(expires_in=3600)
    short_lived = issuer.issue_opaque(expires_in=20)
    guard = worker(issuer, redis_server)
    guard.verify_sync(long_lived)
    client = redis_server.client()
    (long_key,) = client.keys("tokenguard:r:*")
    assert 55_000 < client.pttl(long_key) <= 60_000  # introspection_cache_ttl, 60 s
    guard.verify_sync(short_lived)
    (short_key,) = set(client.keys("tokenguard:r:*")) - {long_key}
    assert 10_000 < client.pttl(short_key) <= 20_000  # never past exp


def test_no_raw_token_reaches_redis(issuer: LocalIssuer, redis_server: RedisServer) -> None:
    opaque = issuer.issue_opaque()
    jwt = issuer.issue(scope="read")
    guard = worker(issuer, redis_server, share_jwt_results=True)
    guard.verify_sync(opaque)
    guard.verify_sync(jwt)
    stored = all_keys(redis_server)
    assert any(key.startswith(b"tokenguard:r:") for key in stored)
    for key, value in stored.items():
        for token in (opaque, jwt):
            assert token.encode() not in key
            assert token.encode() not in value
            assert token.split(".")[-1].encode() not in value  # not even a JWT's signature


def test_encrypted_values_are_unreadable_and_shared(issuer: LocalIssuer, store_server: RedisServer) -> None:
    key = Fernet.generate_key()
    token = issuer.issue_opaque(subject="alice-the-subject")
    first = worker(issuer, store_server, encryption_key=key)
    second = worker(issuer, store_server, encryption_key=[Fernet.generate_key(), key])  # rotation: old key still reads
    first.verify_sync(token)
    values = [v for k, v in all_keys(store_server).items() if k.startswith(b"tokenguard:r:")]
    assert values
    assert all(b"alice-the-subject" not in v for v in values)
    assert second.verify_sync(token).subject == "alice-the-subject"
    assert issuer.requests["/introspect"] == 1
    # A worker with another key cannot read it and introspects itself.
    stranger = worker(issuer, store_server, encryption_key=Fernet.generate_key())
    assert stranger.verify_sync(token).subject == "alice-the-subject"
    assert issuer.requests["/introspect"] == 2


def test_jwks_and_discovery_documents_are_shared(issuer: LocalIssuer, store_server: RedisServer) -> None:
    first, second = worker(issuer, store_server), worker(issuer, store_server)
    first.verify_sync(issuer.issue(scope="read"))
    assert issuer.requests["/jwks"] == 1
    assert issuer.requests["/.well-known/openid-configuration"] == 1
    second.verify_sync(issuer.issue(scope="read"))
    assert issuer.requests["/jwks"] == 1, "the second worker reads the key set from Redis"
    assert issuer.requests["/.well-known/openid-configuration"] == 1
    client = store_server.client()
    # Sealed (MAC'd, not encrypted, without an encryption key): the JSON is readable.
    (doc_key,) = [k for k in client.keys("tokenguard:d:*") if b'\\"keys\\"' in client.get(k)]
    assert 0 < client.pttl(doc_key) <= 300_000  # the JWKS max-age


def test_rotation_seen_by_one_worker_reaches_the_others_through_redis(
    issuer: LocalIssuer, redis_server: RedisServer
) -> None:
    first, second = worker(issuer, redis_server), worker(issuer, redis_server)
    first.verify_sync(issuer.issue())
    second.verify_sync(issuer.issue())
    assert issuer.requests["/jwks"] == 1
    issuer.rotate("RS256")
    rotated = issuer.issue()
    first.verify_sync(rotated)  # unknown kid: refetch from the issuer, publish
    assert issuer.requests["/jwks"] == 2
    second.verify_sync(rotated)  # unknown kid: a newer copy in Redis has it
    assert issuer.requests["/jwks"] == 2


def test_jwt_results_are_shared_only_when_asked(issuer: LocalIssuer, redis_server: RedisServer) -> None:
    token = issuer.issue(scope="read")
    plain_a, plain_b = worker(issuer, redis_server), worker(issuer, redis_server)
    plain_a.verify_sync(token)
    plain_b.verify_sync(token)
    assert plain_b.stats["jwt_verified_locally"] == 1  # verifying beats a Redis round trip
    assert not redis_server.client().keys("tokenguard:r:*")
    shared_a = worker(issuer, redis_server, share_jwt_results=True)
    shared_b = worker(issuer, redis_server, share_jwt_results=True)
    shared_a.verify_sync(token)
    assert shared_b.verify_sync(token) == shared_a.verify_sync(token)
    assert shared_b.stats.get("jwt_verified_locally", 0) == 0
    assert shared_b.stats["shared_cache_hit"] == 1


def test_revocation_checked_jwts_are_shared(issuer: LocalIssuer, redis_server: RedisServer) -> None:
    token = issuer.issue(scope="read")
    first = worker(issuer, redis_server, check_revocation=True)
    second = worker(issuer, redis_server, check_revocation=True)
    first.verify_sync(token)
    second.verify_sync(token)
    assert issuer.requests["/introspect"] == 1


def test_concurrent_misses_in_two_workers_make_one_introspection(
    issuer: LocalIssuer, store_server: RedisServer
) -> None:
    token = issuer.issue_opaque()
    issuer.faults["/introspect"] = Fault(status=0, delay=0.3)  # slow, but answers
    guards = [worker(issuer, store_server), worker(issuer, store_server)]
    results: list[str | None] = []
    barrier = threading.Barrier(10)

    def call(guard: TokenGuard) -> None:
        barrier.wait()
        results.append(guard.verify_sync(token).subject)

    threads = [threading.Thread(target=call, args=(guards[i % 2],)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["user-1"] * 10
    assert issuer.requests["/introspect"] == 1, "one call across both workers (Redis lock + in-process single-flight)"


def test_a_failed_leader_lets_waiters_try_themselves(issuer: LocalIssuer, redis_server: RedisServer) -> None:
    token = issuer.issue_opaque()
    issuer.faults["/introspect"] = Fault(status=503)
    guard = worker(issuer, redis_server)
    with pytest.raises(Exception, match="introspection answered HTTP 503"):
        guard.verify_sync(token)
    assert not redis_server.client().keys("tokenguard:l:*"), "the lock is released on failure"
    del issuer.faults["/introspect"]
    assert worker(issuer, redis_server).verify_sync(token).subject == "user-1"


def test_redis_killed_mid_run_falls_back_to_memory_and_provider(
    issuer: LocalIssuer, store_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    token = issuer.issue_opaque()
    first = worker(issuer, store_server)
    first.verify_sync(token)
    store_server.kill()
    caplog.set_level(logging.WARNING, logger="tokenguard.redis")
    # The worker that saw the token answers from its own memory.
    assert first.verify_sync(token).subject == "user-1"
    # A new worker cannot reach Redis: it asks the provider, and requests keep succeeding.
    second = worker(issuer, store_server)
    for _ in range(3):
        assert second.verify_sync(issuer.issue_opaque()).subject == "user-1"
    assert second.verify_sync(issuer.issue(scope="read")).scopes == {"read"}
    warnings = [r for r in caplog.records if "shared cache unreachable" in r.getMessage()]
    assert len(warnings) == 1, "one warning per retry interval, not one per request"
    store = second._shared
    assert isinstance(store, RedisCache)
    assert store.errors == 1, "after one failure Redis is skipped for retry_interval"


def test_redis_back_after_an_outage_is_used_again(issuer: LocalIssuer, redis_server: RedisServer) -> None:
    token = issuer.issue_opaque()
    store = RedisCache(redis_server.url, retry_interval=0.0)
    guard = issuer.guard(cache=store, hash_key=HASH_KEY)
    redis_server.kill()
    guard.verify_sync(token)
    assert store.errors >= 1
    revived = RedisServer()
    revived.port = redis_server.port
    revived.start()
    try:
        guard.verify_sync(issuer.issue_opaque())
        assert revived.client().keys("tokenguard:r:*")
    finally:
        revived.kill()


def test_cache_url_builds_a_redis_store(issuer: LocalIssuer, redis_server: RedisServer) -> None:
    token = issuer.issue_opaque()
    first = issuer.guard(cache=redis_server.url)
    second = issuer.guard(cache=redis_server.url)
    first.verify_sync(token)
    second.verify_sync(token)
    # No hash_key given: both derive the same one from their configuration.
    assert issuer.requests["/introspect"] == 1
    assert "***" in repr(RedisCache("redis://:hunter2@127.0.0.1:1/0"))
    assert "hunter2" not in repr(RedisCache("redis://:hunter2@127.0.0.1:1/0"))


def test_tampered_entries_in_redis_are_ignored(issuer: LocalIssuer, redis_server: RedisServer) -> None:
    token = issuer.issue_opaque()
    worker(issuer, redis_server).verify_sync(token)
    client = redis_server.client()
    for key in client.keys("tokenguard:r:*"):
        client.set(key, b'{"u": "garbage"')
    assert worker(issuer, redis_server).verify_sync(token).subject == "user-1"
    assert issuer.requests["/introspect"] == 2


def test_result_wire_format_round_trips() -> None:
    claims = TokenClaims({"sub": "u", "scp": ["a", "b"], "exp": 2_000_000_000}, token_type="jwt")
    entry = CachedResult(claims, 123.5, valid_until=2_000_000_060.0, issuer="https://i", key_thumbprint="tp")
    data = encode_result(entry)
    assert data is not None
    back = decode_result(data)
    assert back is not None
    assert back.claims == claims
    assert back.claims is not None and back.claims.scopes == {"a", "b"}
    assert (back.cache_until, back.valid_from, back.valid_until) == (123.5, float("-inf"), 2_000_000_060.0)
    assert (back.issuer, back.key_thumbprint) == ("https://i", "tp")
    negative = decode_result(encode_result(CachedResult(None, 5.0, reason="token is not active")) or b"")
    assert negative is not None and negative.claims is None and negative.reason == "token is not active"
    for garbage in (b"", b"[]", b'{"u":1,"c":[],"t":"jwt","s":[]}', b'{"u":1,"c":{},"t":"x","s":[]}', b"\xff"):
        assert decode_result(garbage) is None


def test_redis_cluster(redis_cluster: list[RedisServer], issuer: LocalIssuer) -> None:
    url = redis_cluster[0].url.rsplit("/", 1)[0]
    token = issuer.issue_opaque()

    def cluster_worker() -> TokenGuard:
        return issuer.guard(cache=RedisCache(url, cluster=True), hash_key=HASH_KEY)

    first, second = cluster_worker(), cluster_worker()
    first.verify_sync(token)
    second.verify_sync(token)
    second.verify_sync(issuer.issue(scope="read"))
    assert issuer.requests["/introspect"] == 1

    async def run() -> str | None:
        guard = cluster_worker()
        try:
            return (await guard.verify(token)).subject
        finally:
            await guard.aclose()

    assert asyncio.run(run()) == "user-1"
    assert issuer.requests["/introspect"] == 1


def test_untrusted_issuer_touches_neither_provider_nor_redis(issuer: LocalIssuer, redis_server: RedisServer) -> None:
    class CountingCache(RedisCache):
        reads = 0

        def get_sync(self, key: str) -> bytes | None:
            CountingCache.reads += 1
            return super().get_sync(key)

    guard = issuer.guard(cache=CountingCache(redis_server.url), hash_key=HASH_KEY)
    with LocalIssuer() as stranger:
        token = stranger.issue()
    with pytest.raises(InvalidToken, match="untrusted issuer"):
        guard.verify_sync(token)
    assert CountingCache.reads == 0
    assert sum(issuer.requests.values()) == 0


def test_many_tasks_in_one_worker_share_one_introspection_without_polling(
    issuer: LocalIssuer, redis_server: RedisServer
) -> None:
    token = issuer.issue_opaque()
    issuer.faults["/introspect"] = Fault(status=0, delay=0.2)

    async def run() -> list[str | None]:
        guard = worker(issuer, redis_server)
        try:
            return [c.subject for c in await asyncio.gather(*(guard.verify(token) for _ in range(20)))]
        finally:
            await guard.aclose()

    assert asyncio.run(run()) == ["user-1"] * 20
    assert issuer.requests["/introspect"] == 1


def test_shared_jwt_result_serves_a_worker_that_never_loaded_keys(
    issuer: LocalIssuer, redis_server: RedisServer
) -> None:
    token = issuer.issue(scope="read")
    worker(issuer, redis_server, share_jwt_results=True).verify_sync(token)
    second = worker(issuer, redis_server, share_jwt_results=True)
    for _ in range(5):
        assert second.verify_sync(token).scopes == {"read"}
    assert second.stats["shared_cache_hit"] == 1, "then its in-process cache answers"
    assert second.stats["cache_hit"] == 4


def test_flask_workers_share_through_app_config(issuer: LocalIssuer, redis_server: RedisServer) -> None:
    """Two Flask apps configured with TOKENGUARD_CACHE share one introspection."""
    from flask import Flask

    from tokenguard.flask import FlaskTokenGuard, current_token

    def app() -> Any:
        flask_app = Flask(__name__)
        flask_app.config.update(
            TOKENGUARD_ISSUER=issuer.issuer,
            TOKENGUARD_AUDIENCE="https://api.test",
            TOKENGUARD_CLIENT_ID=issuer.client_id,
            TOKENGUARD_CLIENT_SECRET=issuer.client_secret,
            TOKENGUARD_PROTECT_ALL=True,
            TOKENGUARD_CACHE=redis_server.url,
            TOKENGUARD_HASH_KEY="same-key-in-every-worker",
        )
        extensions.append(FlaskTokenGuard(flask_app))

        @flask_app.get("/me")
        def me() -> dict[str, Any]:
            return {"sub": current_token.subject}

        return flask_app

    extensions: list[FlaskTokenGuard] = []
    token = issuer.issue_opaque()
    try:
        for flask_app in (app(), app()):
            response = flask_app.test_client().get("/me", headers={"Authorization": f"Bearer {token}"})
            assert response.json == {"sub": "user-1"}
            assert "Authorization" in response.headers["Vary"]
        assert issuer.requests["/introspect"] == 1
    finally:
        for extension in extensions:
            assert extension.guard is not None
            extension.guard.close()
