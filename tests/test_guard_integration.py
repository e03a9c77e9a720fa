"""TokenGuard against a real issuer on a loopback socket (tokenguard.testing.LocalIssuer)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from tokenguard import (
    FetchSettings,
    Introspection,
    InvalidToken,
    JWTIssuer,
    ServiceUnavailable,
    TokenGuard,
)
from tokenguard.testing import Fault, LocalIssuer

from .conftest import API
from .helpers import Clock

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "EdDSA"])
def test_discovery_and_jwks_verify_each_algorithm(shared_issuer: LocalIssuer, alg: str) -> None:
    """Keys found by discovery verify tokens of every asymmetric algorithm."""
    guard = shared_issuer.guard(introspection=False)
    claims = guard.verify_sync(shared_issuer.issue(alg=alg, scope="read write"))
    assert claims.token_type == "jwt"
    assert claims.scopes == {"read", "write"}
    assert claims.issuer == shared_issuer.issuer
    assert claims.audience == (API,)


def test_async_and_sync_agree(shared_issuer: LocalIssuer) -> None:
    """verify() and verify_sync() give equal claims for the same token."""
    token = shared_issuer.issue(scope="read")
    sync_claims = shared_issuer.guard(introspection=False).verify_sync(token)
    async_claims = asyncio.run(shared_issuer.guard(introspection=False).verify(token))
    assert sync_claims == async_claims


@pytest.mark.parametrize(
    ("path", "style"), [("", "oidc"), ("/oidc/endpoint/OP", "oidc"), ("/tenant", "oauth"), ("", "oauth")]
)
def test_discovery_forms(path: str, style: str) -> None:
    """OIDC (appended) and RFC 8414 (inserted) metadata are both found, with and without a path."""
    with LocalIssuer(path=path, metadata_style=style, algorithms=("ES256",)) as issuer:
        guard = issuer.guard(introspection=False)
        assert guard.verify_sync(issuer.issue(alg="ES256")).subject == "user-1"
        served = (
            "/.well-known/openid-configuration" if style == "oidc" else f"/.well-known/oauth-authorization-server{path}"
        )
        assert any(served in name for name in issuer.requests)


def test_discovery_issuer_mismatch_is_503(issuer: LocalIssuer) -> None:
    """A metadata document naming another issuer is refused; tokens get 503, not 200."""
    token = issuer.issue(claims={**issuer.claims(), "iss": issuer.issuer + "/"})
    with TokenGuard.from_issuer(issuer.issuer + "/", audience=API) as guard, pytest.raises(ServiceUnavailable):
        guard.verify_sync(token)


def test_repeated_token_hits_cache(issuer: LocalIssuer) -> None:
    """A token seen before is answered from the cache: no new fetch, same claims."""
    guard = issuer.guard(introspection=False)
    token = issuer.issue()
    first = guard.verify_sync(token)
    before = dict(issuer.requests)
    assert guard.verify_sync(token) is first
    assert dict(issuer.requests) == before
    assert guard.stats["cache_hit"] == 1


def test_new_tokens_after_the_first_fetch_need_no_network(issuer: LocalIssuer) -> None:
    """Once the keys are fetched, new tokens are verified with them alone, sync and async, and counted once each."""
    guard = issuer.guard(introspection=False)
    guard.verify_sync(issuer.issue())
    before = dict(issuer.requests)
    for _ in range(5):
        assert guard.verify_sync(issuer.issue()).subject == "user-1"
    for _ in range(5):
        assert asyncio.run(guard.verify(issuer.issue())).subject == "user-1"
    assert dict(issuer.requests) == before
    assert guard.stats["jwt_verified_locally"] == 11
    assert guard.stats["cache_miss"] == 11


def test_cached_token_still_expires() -> None:
    """exp is re-checked on every cache hit."""
    clock = Clock()
    with LocalIssuer(algorithms=("ES256",)) as issuer:
        guard = issuer.guard(introspection=False, clock=clock, leeway=0)
        token = issuer.issue(alg="ES256", expires_in=30)
        guard.verify_sync(token)
        clock.now += 31
        with pytest.raises(InvalidToken, match="expired"):
            guard.verify_sync(token)


def test_key_rotation_picked_up_on_first_sight(issuer: LocalIssuer) -> None:
    """A token signed by a newly published key verifies after one refetch."""
    guard = issuer.guard(introspection=False)
    guard.verify_sync(issuer.issue())
    assert issuer.requests["/jwks"] == 1
    new_key = issuer.rotate("RS256")
    claims = guard.verify_sync(issuer.issue(kid=new_key.kid))
    assert claims.subject == "user-1"
    assert issuer.requests["/jwks"] == 2


def test_unknown_kid_flood_is_rate_limited(issuer: LocalIssuer) -> None:
    """Many unknown kids within the cooldown cause at most one refetch."""
    guard = issuer.guard(introspection=False)
    guard.verify_sync(issuer.issue())
    for i in range(50):
        token = issuer.issue(headers={"kid": f"random-{i}"})
        with pytest.raises(InvalidToken, match="unknown signing key"):
            guard.verify_sync(token)
    assert issuer.requests["/jwks"] == 2


def test_unknown_kid_refetch_again_after_cooldown() -> None:
    """Once the cooldown has passed, an unknown kid may trigger another refetch."""
    clock = Clock()
    with LocalIssuer(algorithms=("ES256",)) as issuer:
        guard = issuer.guard(introspection=False, clock=clock)
        guard.verify_sync(issuer.issue(alg="ES256"))
        with pytest.raises(InvalidToken):
            guard.verify_sync(issuer.issue(alg="ES256", headers={"kid": "x1"}))
        with pytest.raises(InvalidToken):
            guard.verify_sync(issuer.issue(alg="ES256", headers={"kid": "x2"}))
        assert issuer.requests["/jwks"] == 2
        clock.now += 31
        with pytest.raises(InvalidToken):
            guard.verify_sync(issuer.issue(alg="ES256", headers={"kid": "x3"}))
        assert issuer.requests["/jwks"] == 3


def test_jwks_max_age_honoured() -> None:
    """The JWKS is refetched only after its max-age (within bounds) has passed."""
    clock = Clock()
    with LocalIssuer(algorithms=("ES256",), jwks_max_age=900) as issuer:
        guard = issuer.guard(introspection=False, clock=clock)
        guard.verify_sync(issuer.issue(alg="ES256", expires_in=7200))
        clock.now += 899
        guard.verify_sync(issuer.issue(alg="ES256", expires_in=7200))
        assert issuer.requests["/jwks"] == 1
        clock.now += 2
        guard.verify_sync(issuer.issue(alg="ES256", expires_in=7200))
        assert issuer.requests["/jwks"] == 2


def test_removed_key_stops_verifying_and_drops_cached_results() -> None:
    """After a refresh without the key, cached results signed by it are not served."""
    clock = Clock()
    with LocalIssuer(algorithms=("ES256",), jwks_max_age=300) as issuer:
        old = issuer.key("ES256")
        guard = issuer.guard(introspection=False, clock=clock)
        token = issuer.issue(alg="ES256", expires_in=3600)
        guard.verify_sync(token)
        new = issuer.rotate("ES256")
        issuer.remove_key(old.kid)
        clock.now += 301
        guard.verify_sync(issuer.issue(alg="ES256", kid=new.kid, expires_in=3600))  # refreshes the key set
        with pytest.raises(InvalidToken, match="unknown signing key"):
            guard.verify_sync(token)


def test_jwks_down_at_start_gives_503_then_recovers() -> None:
    """No key set yet and the JWKS failing: 503 with Retry-After; fine once it is back."""
    clock = Clock()
    with LocalIssuer(algorithms=("ES256",)) as issuer:
        issuer.faults["/jwks"] = Fault(status=500)
        guard = issuer.guard(introspection=False, clock=clock)
        token = issuer.issue(alg="ES256")
        with pytest.raises(ServiceUnavailable) as info:
            guard.verify_sync(token)
        assert info.value.retry_after >= 1
        assert guard.error_response(info.value).status_code == 503
        # Within the retry interval no new attempt is made.
        with pytest.raises(ServiceUnavailable):
            guard.verify_sync(token)
        assert issuer.requests["/jwks"] == 1
        del issuer.faults["/jwks"]
        clock.now += 1.5
        assert guard.verify_sync(token).subject == "user-1"


def test_jwks_down_later_keeps_last_good_keys_until_max_staleness() -> None:
    """A failing refresh keeps the last good key set for max_staleness, then 503."""
    clock = Clock()
    fetch = FetchSettings(min_ttl=300, max_staleness=600)
    with LocalIssuer(algorithms=("ES256",), jwks_max_age=300) as issuer:
        guard = issuer.guard(introspection=False, clock=clock, fetch=fetch)
        guard.verify_sync(issuer.issue(alg="ES256", expires_in=7200))
        issuer.faults["/jwks"] = Fault(status=503)
        clock.now += 400
        assert guard.verify_sync(issuer.issue(alg="ES256", expires_in=7200)).subject == "user-1"
        clock.now += 600
        with pytest.raises(ServiceUnavailable):
            guard.verify_sync(issuer.issue(alg="ES256", expires_in=7200))


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=500),
        Fault(status=200, body=b"<html>oops</html>", content_type="text/html"),
        Fault(status=200, body=b"[1,2]"),
        Fault(status=200, body=b'{"keys": "nope"}'),
        Fault(status=302, body=b""),
        Fault(drop=True),
    ],
)
def test_broken_jwks_is_503_never_401(fault: Fault) -> None:
    """Every kind of broken JWKS answer is an upstream failure (503)."""
    with LocalIssuer(algorithms=("ES256",)) as issuer:
        issuer.faults["/jwks"] = fault
        guard = issuer.guard(introspection=False)
        with pytest.raises(ServiceUnavailable):
            guard.verify_sync(issuer.issue(alg="ES256"))


def test_jwks_timeout_is_503() -> None:
    """A JWKS slower than the timeout is a 503."""
    with LocalIssuer(algorithms=("ES256",)) as issuer:
        issuer.faults["/jwks"] = Fault(status=0, delay=1.0)
        guard = issuer.guard(introspection=False, timeout=0.2)
        with pytest.raises(ServiceUnavailable, match="timed out"):
            guard.verify_sync(issuer.issue(alg="ES256"))


def test_oversized_jwks_is_refused() -> None:
    """A JWKS larger than the response cap is refused, not read into memory."""
    with LocalIssuer(algorithms=("ES256",)) as issuer:
        issuer.faults["/jwks"] = Fault(status=200, body=b'{"keys":[' + b" " * (600 * 1024) + b"]}")
        guard = issuer.guard(introspection=False)
        with pytest.raises(ServiceUnavailable, match="exceeds"):
            guard.verify_sync(issuer.issue(alg="ES256"))


def test_oversized_introspection_answer_is_refused() -> None:
    """An introspection answer over its size limit is an upstream failure."""
    with LocalIssuer(algorithms=("ES256",)) as issuer:
        issuer.faults["/introspect"] = Fault(status=200, body=b'{"active": true, "pad": "' + b"x" * 70_000 + b'"}')
        with pytest.raises(ServiceUnavailable, match="exceeds"):
            issuer.guard().verify_sync("opaque-token")


def test_jwks_key_count_limit() -> None:
    """A JWK Set with more keys than allowed is refused as a whole (503)."""
    with LocalIssuer(algorithms=("ES256",)) as issuer:
        guard = issuer.guard(introspection=False, fetch=FetchSettings(max_keys=1))
        issuer.add_key("ES256")
        with pytest.raises(ServiceUnavailable, match="limit"):
            guard.verify_sync(issuer.issue(alg="ES256"))


def test_jwks_with_a_bad_key_among_good_ones(issuer: LocalIssuer, caplog: pytest.LogCaptureFixture) -> None:
    """A malformed key is skipped and logged; the good keys keep working."""
    good = issuer.jwks()
    good["keys"].append({"kty": "RSA", "kid": "broken", "n": "!!!", "e": "AQAB"})
    import json

    issuer.faults["/jwks"] = Fault(status=200, body=json.dumps(good).encode())
    guard = issuer.guard(introspection=False)
    assert guard.verify_sync(issuer.issue()).subject == "user-1"
    assert "broken" in caplog.text


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
def test_opaque_token_introspected(issuer: LocalIssuer, auth_method: str) -> None:
    """Opaque tokens are introspected with either client authentication method."""
    guard = issuer.guard(auth_method=auth_method)
    token = issuer.issue_opaque(scope=["read", "write"])
    claims = guard.verify_sync(token)
    assert claims.token_type == "opaque"
    assert claims.scopes == {"read", "write"}
    sent = issuer.introspection_requests[-1]
    assert sent["token"] == token
    assert sent["token_type_hint"] == "access_token"
    assert ("client_secret" in sent) == (auth_method == "client_secret_post")


def test_wrong_client_secret_is_503_not_401(issuer: LocalIssuer) -> None:
    """The introspection endpoint refusing our credentials is our problem, not the token's."""
    guard = issuer.guard(client_secret="wrong")
    with pytest.raises(ServiceUnavailable):
        guard.verify_sync(issuer.issue_opaque())


def test_introspection_results_cached_and_revocation_seen_after_ttl() -> None:
    """Active answers are reused for cache_ttl; a revocation is seen once it lapses."""
    clock = Clock()
    with LocalIssuer(algorithms=("ES256",)) as issuer:
        guard = issuer.guard(clock=clock, introspection_cache_ttl=30)
        token = issuer.issue_opaque(expires_in=3600)
        guard.verify_sync(token)
        guard.verify_sync(token)
        assert issuer.requests["/introspect"] == 1
        issuer.revoke(token)
        clock.now += 29
        assert guard.verify_sync(token)  # still cached
        clock.now += 2
        with pytest.raises(InvalidToken, match="not active"):
            guard.verify_sync(token)
        assert issuer.requests["/introspect"] == 2


def test_introspection_cache_never_outlives_exp() -> None:
    """An introspected token's cache entry ends at its exp."""
    clock = Clock()
    with LocalIssuer(algorithms=("ES256",)) as issuer:
        guard = issuer.guard(clock=clock, introspection_cache_ttl=600)
        token = issuer.issue_opaque(expires_in=20)
        guard.verify_sync(token)
        clock.now += 21
        with pytest.raises(InvalidToken):
            guard.verify_sync(token)


def test_inactive_answers_are_negatively_cached() -> None:
    """An inactive token is not re-asked for negative_ttl."""
    clock = Clock()
    with LocalIssuer(algorithms=("ES256",)) as issuer:
        guard = issuer.guard(clock=clock)
        for _ in range(3):
            with pytest.raises(InvalidToken):
                guard.verify_sync("not-a-real-token")
        assert issuer.requests["/introspect"] == 1
        clock.now += 11
        with pytest.raises(InvalidToken):
            guard.verify_sync("not-a-real-token")
        assert issuer.requests["/introspect"] == 2


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=500),
        Fault(status=200, body=b"<html>login</html>", content_type="text/html"),
        Fault(status=200, body=b"not json"),
        Fault(status=200, body=b'["active", true]'),
        Fault(drop=True),
    ],
)
def test_broken_introspection_is_503(fault: Fault) -> None:
    """Introspection failures are 503: never 200, never 401."""
    with LocalIssuer(algorithms=("ES256",)) as issuer:
        token = issuer.issue_opaque()
        issuer.faults["/introspect"] = fault
        guard = issuer.guard()
        with pytest.raises(ServiceUnavailable):
            guard.verify_sync(token)


@pytest.mark.parametrize("answer", [b'{"active": "true"}', b'{"active": 1}', b"{}", b'{"sub": "admin"}'])
def test_introspection_non_boolean_active_is_inactive(answer: bytes) -> None:
    """Only the JSON boolean true means active."""
    with LocalIssuer(algorithms=("ES256",)) as issuer:
        issuer.faults["/introspect"] = Fault(status=200, body=answer)
        with pytest.raises(InvalidToken, match="not active"):
            issuer.guard().verify_sync("opaque-token")


def test_cached_introspection_survives_outage() -> None:
    """A cached active result is still served while the endpoint is down."""
    with LocalIssuer(algorithms=("ES256",)) as issuer:
        guard = issuer.guard()
        token = issuer.issue_opaque()
        guard.verify_sync(token)
        issuer.faults["/introspect"] = Fault(status=503)
        assert guard.verify_sync(token).token_type == "opaque"


def test_unknown_issuer_causes_no_network_call(issuer: LocalIssuer) -> None:
    """A JWT naming an unconfigured issuer is refused before any request is made."""
    guard = issuer.guard()
    token = issuer.issue(
        claims={**issuer.claims(), "iss": "https://evil.example"}, headers={"jku": "https://evil.example/jwks"}
    )
    with pytest.raises(InvalidToken, match="untrusted issuer"):
        guard.verify_sync(token)
    assert sum(issuer.requests.values()) == 0


def test_opaque_token_without_introspection_is_invalid(issuer: LocalIssuer) -> None:
    """With no introspection configured, an opaque token is invalid_token, offline."""
    guard = issuer.guard(introspection=False)
    with pytest.raises(InvalidToken):
        guard.verify_sync("opaque-token-value")
    assert sum(issuer.requests.values()) == 0


def test_multi_tenant_issuers_are_isolated() -> None:
    """Two issuers in one guard: each token verifies only with its own issuer's keys."""
    with LocalIssuer(path="/a", algorithms=("ES256",)) as a, LocalIssuer(path="/b", algorithms=("ES256",)) as b:
        guard = TokenGuard([JWTIssuer(a.issuer, audience=API), JWTIssuer(b.issuer, audience=API)])
        a._guards.append(guard)
        assert guard.verify_sync(a.issue(alg="ES256")).issuer == a.issuer
        assert guard.verify_sync(b.issue(alg="ES256")).issuer == b.issuer
        # A token from B's keys claiming to be from A.
        forged = b.issue(alg="ES256", claims={**b.claims(), "iss": a.issuer}, headers={"kid": a.key("ES256").kid})
        with pytest.raises(InvalidToken):
            guard.verify_sync(forged)


def test_jwt_and_opaque_side_by_side(issuer: LocalIssuer) -> None:
    """One guard routes JWTs locally and opaque tokens to introspection."""
    guard = issuer.guard()
    assert guard.verify_sync(issuer.issue()).token_type == "jwt"
    assert guard.verify_sync(issuer.issue_opaque()).token_type == "opaque"
    assert issuer.requests["/introspect"] == 1


def test_static_jwks_uri_without_discovery(issuer: LocalIssuer) -> None:
    """A configured jwks_uri is used directly; discovery is never fetched."""
    with TokenGuard([JWTIssuer(issuer.issuer, audience=API, jwks_uri=issuer.jwks_uri)]) as guard:
        guard.verify_sync(issuer.issue())
    assert set(issuer.requests) == {"/jwks"}


def test_explicit_introspection_endpoint(issuer: LocalIssuer) -> None:
    """Introspection configured by URL needs no discovery."""
    introspection = Introspection(
        endpoint=issuer.introspection_endpoint, client_id=issuer.client_id, client_secret=issuer.client_secret
    )
    with TokenGuard(introspection=introspection) as guard:
        assert guard.verify_sync(issuer.issue_opaque(scope="a")).scopes == {"a"}
    assert set(issuer.requests) == {"/introspect"}


def test_fifty_concurrent_threads_make_one_jwks_fetch(issuer: LocalIssuer) -> None:
    """Concurrent first requests with a cold cache share a single JWKS fetch."""
    issuer.faults["/jwks"] = Fault(status=0, delay=0.2)  # slow, so they overlap
    guard = issuer.guard(introspection=False)
    tokens = [issuer.issue() for _ in range(50)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(50)

    def work(token: str) -> None:
        barrier.wait()
        try:
            guard.verify_sync(token)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert issuer.requests["/jwks"] == 1
    assert issuer.requests["/.well-known/openid-configuration"] == 1


def test_fifty_concurrent_tasks_make_one_jwks_fetch(issuer: LocalIssuer) -> None:
    """The async path coalesces the same way."""
    issuer.faults["/jwks"] = Fault(status=0, delay=0.2)
    guard = issuer.guard(introspection=False)
    tokens = [issuer.issue() for _ in range(50)]

    async def main() -> list[Any]:
        try:
            return await asyncio.gather(*(guard.verify(t) for t in tokens))
        finally:
            await guard.aclose()

    results = asyncio.run(main())
    assert len(results) == 50
    assert issuer.requests["/jwks"] == 1


def test_concurrent_introspection_of_one_token_is_coalesced(issuer: LocalIssuer) -> None:
    """Concurrent misses for the same opaque token make one introspection call."""
    issuer.faults["/introspect"] = Fault(status=0, delay=0.2)
    guard = issuer.guard()
    token = issuer.issue_opaque()

    async def main() -> None:
        try:
            await asyncio.gather(*(guard.verify(token) for _ in range(20)))
        finally:
            await guard.aclose()

    asyncio.run(main())
    assert issuer.requests["/introspect"] == 1


def test_plain_http_issuer_refused_off_loopback() -> None:
    """Non-loopback http issuers are refused unless explicitly allowed."""
    from tokenguard import ConfigurationError

    with pytest.raises(ConfigurationError):
        TokenGuard.from_issuer("http://idp.example.com", audience=API)
    TokenGuard.from_issuer("http://idp.example.com", audience=API, fetch=FetchSettings(require_https=False))
