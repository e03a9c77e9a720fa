"""A cached verdict is only served under the policy that produced it (in process and through Redis).

Each scenario is the attack of the issue: two guards with different policies
share a cache (one ``MemoryCache`` and ``hash_key`` in a process, or one
Redis without an explicit ``hash_key``); a token the first accepts must still
be refused by the second, before and after the first has seen it.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from tokenguard import InvalidToken, TokenGuard
from tokenguard.cache import MemoryCache
from tokenguard.redis_cache import RedisCache
from tokenguard.testing import LocalIssuer

from .conftest import RedisServer
from .flavours import verify

pytestmark = pytest.mark.integration

PAYMENTS = "https://payments.api"
ADMIN = "https://admin.api"
HASH_KEY = b"k" * 32

#: (what the second guard adds, how the token is minted, what the second says)
DIFFERENCES: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "audience": ({"audience": ADMIN}, {}, "wrong audience"),
    "required_claims": ({"required_claims": ["email"]}, {}, "missing required claim"),
    "token_types": ({"token_types": ["at+jwt"]}, {"typ": "JWT"}, "wrong token type"),
    "leeway": ({"leeway": 0}, {"expires_in": -30}, "expired"),  # the default leeway is 60 s
}


def shared_cache(kind: str, redis_server: RedisServer) -> Callable[[], dict[str, Any]]:
    """Guard options that make guards share a cache: in process, or through Redis."""
    if kind == "memory":
        cache = MemoryCache()
        return lambda: {"cache": cache, "hash_key": HASH_KEY}
    # No hash_key: both derive the same one from their (shared) client credentials.
    return lambda: {"cache": RedisCache(redis_server.url, share_jwt_results=True)}


def mint(issuer: LocalIssuer, token_options: dict[str, Any]) -> str:
    options = dict(token_options)
    typ = options.pop("typ", "at+jwt")
    return issuer.issue(typ=typ, audience=PAYMENTS, **options)



@pytest.fixture(params=["memory", "redis"])
def cache_kind(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Callable[[], dict[str, Any]]]:
    yield shared_cache(request.param, redis_server)


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("difference", sorted(DIFFERENCES))
def test_a_verdict_never_crosses_policies(
    issuer: LocalIssuer, cache_kind: Callable[[], dict[str, Any]], difference: str, flavour: str
) -> None:
    """The stricter guard refuses the token before and after the laxer one accepted it."""
    extra, token_options, message = DIFFERENCES[difference]
    token = mint(issuer, token_options)
    lax = issuer.guard(audience=PAYMENTS, **cache_kind())
    strict_options = {"audience": PAYMENTS, **extra}
    strict = issuer.guard(**strict_options, **cache_kind())
    with pytest.raises(InvalidToken, match=message):
        verify(strict, token, flavour)
    assert verify(lax, token, flavour).subject == "user-1"
    assert verify(lax, token, flavour).subject == "user-1"  # served from the cache
    with pytest.raises(InvalidToken, match=message):
        verify(strict, token, flavour)
    # And a fresh strict guard (a new worker) too.
    with pytest.raises(InvalidToken, match=message):
        verify(issuer.guard(**strict_options, **cache_kind()), token, flavour)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_revocation_checking_guard_never_takes_a_plain_verdict(
    issuer: LocalIssuer, cache_kind: Callable[[], dict[str, Any]], flavour: str
) -> None:
    """A revoked JWT cached by a guard without revocation checks is refused by one with them."""
    token = issuer.issue(audience=PAYMENTS)
    plain = issuer.guard(audience=PAYMENTS, **cache_kind())
    assert verify(plain, token, flavour).subject == "user-1"
    issuer.revoke(token)
    checking = issuer.guard(audience=PAYMENTS, check_revocation=True, **cache_kind())
    with pytest.raises(InvalidToken, match="not active"):
        verify(checking, token, flavour)
    assert issuer.requests["/introspect"] == 1


def test_identical_guards_still_share_verdicts(issuer: LocalIssuer) -> None:
    """The worker fleet: guards built alike share one MemoryCache's entries."""
    cache = MemoryCache()
    token = issuer.issue(audience=PAYMENTS)
    first = issuer.guard(audience=PAYMENTS, cache=cache, hash_key=HASH_KEY)
    second = issuer.guard(audience=PAYMENTS, cache=cache, hash_key=HASH_KEY)
    first.verify_sync(token)
    second.verify_sync(token)
    assert second.stats["cache_hit"] == 1
    assert second.stats.get("jwt_verified_locally", 0) == 0


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_shared_introspection_answer_is_rechecked_by_each_reader(
    issuer: LocalIssuer, redis_server: RedisServer, flavour: str
) -> None:
    """One introspection answer in Redis: the payments API accepts, the admin API refuses (wrong audience)."""
    token = issuer.issue_opaque(audience=PAYMENTS)
    payments = issuer.guard(audience=PAYMENTS, cache=RedisCache(redis_server.url))
    admin = issuer.guard(audience=ADMIN, cache=RedisCache(redis_server.url))
    assert verify(payments, token, flavour).subject == "user-1"
    with pytest.raises(InvalidToken, match="wrong audience"):
        verify(admin, token, flavour)
    # The admin API used the shared answer (no second call) and judged it itself.
    assert issuer.requests["/introspect"] == 1
    assert admin.stats["shared_cache_hit"] == 1


class TwoClientIssuer(LocalIssuer):
    """An authorization server that knows two resource servers and tells each
    only about tokens meant for it (as per-client introspection policies do)."""

    CLIENTS: Mapping[str, str] = {"payments-rs": "pay-secret", "admin-rs": "admin-secret"}

    def __init__(self) -> None:
        super().__init__(algorithms=("ES256",))
        self._asking = threading.local()

    def _client_authenticated(self, headers: Mapping[str, str], form: dict[str, str]) -> bool:
        client = form.get("client_id", "")
        self._asking.client = client
        return self.CLIENTS.get(client) == form.get("client_secret")

    def introspect(self, token: str) -> dict[str, Any]:
        answer = super().introspect(token)
        if getattr(self._asking, "client", None) != "payments-rs":
            return {"active": False}
        return answer


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_apis_with_different_clients_never_share_answers(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, flavour: str
) -> None:
    """Same TOKENGUARD_HASH_KEY, same audience, different client_id: the admin API asks for itself."""
    monkeypatch.setenv("TOKENGUARD_HASH_KEY", "one key for every API")
    with TwoClientIssuer() as server:
        token = server.issue_opaque(audience=PAYMENTS)

        def api(client: str) -> TokenGuard:
            return server.guard(
                audience=PAYMENTS,
                client_id=client,
                client_secret=TwoClientIssuer.CLIENTS[client],
                auth_method="client_secret_post",
                cache=RedisCache(redis_server.url),
            )

        assert verify(api("payments-rs"), token, flavour).subject == "user-1"
        with pytest.raises(InvalidToken, match="not active"):
            verify(api("admin-rs"), token, flavour)
        assert [r["client_id"] for r in server.introspection_requests] == ["payments-rs", "admin-rs"]


def accept_everything(token: str) -> Mapping[str, Any] | None:
    return {"sub": "from-a", "exp": time.time() + 300} if token == "custom-token" else None


def accept_nothing(token: str) -> Mapping[str, Any] | None:
    return None


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_custom_verifiers_never_share_answers(redis_server: RedisServer, kind: str) -> None:
    """A guard whose verifier refuses a token never accepts it on another verifier's word."""
    options = shared_cache(kind, redis_server)
    first = TokenGuard(verifier=accept_everything, **options())
    second = TokenGuard(verifier=accept_nothing, **options())
    if kind == "redis":
        first = TokenGuard(verifier=accept_everything, cache=RedisCache(redis_server.url), hash_key=HASH_KEY)
        second = TokenGuard(verifier=accept_nothing, cache=RedisCache(redis_server.url), hash_key=HASH_KEY)
    assert first.verify_sync("custom-token").subject == "from-a"
    with pytest.raises(InvalidToken):
        second.verify_sync("custom-token")
    # The same verifier in another worker does use the shared answer.
    if kind == "redis":
        third = TokenGuard(verifier=accept_everything, cache=RedisCache(redis_server.url), hash_key=HASH_KEY)
        assert third.verify_sync("custom-token").subject == "from-a"
        assert third.stats["shared_cache_hit"] == 1


def test_policy_fingerprint_covers_every_verdict_setting(issuer: LocalIssuer) -> None:
    """Guards differing in any one verdict-changing setting hash tokens to different local keys."""
    base: dict[str, Any] = {"audience": PAYMENTS, "hash_key": HASH_KEY, "introspection": False}
    variants: list[dict[str, Any]] = [
        {},
        {"audience": ADMIN},
        {"token_types": ["at+jwt"]},
        {"required_claims": ["email"]},
        {"leeway": 5},
        {"algorithms": ["ES256"]},
        {"scope_claims": ["roles"]},
        {"introspection": True},
        {"introspection": True, "client_id": "other-client"},
        {"introspection": True, "check_revocation": True},
        {"introspection": True, "introspection_endpoint": issuer.issuer + "/other-introspect"},
        {"verifier": accept_everything},
        {"verifier": accept_nothing},
    ]
    keys = set()
    for variant in variants:
        guard = issuer.guard(**{**base, **variant})
        keys.add(guard._hasher.cache_key("token"))
    assert len(keys) == len(variants)
    # And identical configurations agree.
    assert issuer.guard(**base)._hasher.cache_key("token") == issuer.guard(**base)._hasher.cache_key("token")


class TenantVerifier:
    """A configurable verifier: accepts only tokens of its own tenant (two instances, two policies)."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant

    def __call__(self, token: str) -> Mapping[str, Any] | None:
        return {"sub": self.tenant, "exp": time.time() + 300} if token.startswith(self.tenant + ":") else None

    def check(self, token: str) -> Mapping[str, Any] | None:
        return self(token)


def tenant_check(tenant: str, token: str) -> Mapping[str, Any] | None:
    return {"sub": tenant, "exp": time.time() + 300} if token.startswith(tenant + ":") else None


def tenant_closure(tenant: str) -> Callable[[str], Mapping[str, Any] | None]:
    def check(token: str) -> Mapping[str, Any] | None:
        return tenant_check(tenant, token)

    return check


VERIFIER_PAIRS: dict[str, Callable[[str], Any]] = {
    "instances": TenantVerifier,
    "bound methods": lambda tenant: TenantVerifier(tenant).check,
    "partials": lambda tenant: functools.partial(tenant_check, tenant),
    "closures": tenant_closure,
}


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("pair", sorted(VERIFIER_PAIRS))
def test_configured_verifiers_of_one_kind_never_share_answers(
    redis_server: RedisServer, pair: str, flavour: str
) -> None:
    """Two verifiers with one name but different configuration (instances of a class,
    bound methods, partials, closures) never accept through each other's shared answer."""
    make = VERIFIER_PAIRS[pair]
    token = f"tenant-a:{pair}:{flavour}:{time.monotonic_ns()}"

    def guard(tenant: str) -> TokenGuard:
        return TokenGuard(verifier=make(tenant), cache=RedisCache(redis_server.url), hash_key=HASH_KEY)

    assert verify(guard("tenant-a"), token, flavour).subject == "tenant-a"
    with pytest.raises(InvalidToken):
        verify(guard("tenant-b"), token, flavour)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_userinfo_answers_are_never_verdicts(issuer: LocalIssuer, flavour: str) -> None:
    """A cached UserInfo answer shares the guard's cache but never answers verify(),
    whatever string is presented (it is not a verification of any token)."""
    guard = issuer.guard(audience=PAYMENTS, introspection=False)
    token = issuer.issue(alg="ES256", subject="alice", audience=PAYMENTS)
    assert guard.userinfo_sync(token)["email"] == "alice@example.test"
    for crafted in ("\x00userinfo\x00" + token, "userinfo" + token):
        with pytest.raises(InvalidToken):
            verify(guard, crafted, flavour)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_metadata_from_another_discovery_url_is_not_shared(
    issuer: LocalIssuer, redis_server: RedisServer, flavour: str
) -> None:
    """One issuer, two discovery URLs (e.g. Entra ID's ``?appid=`` metadata naming
    app-specific keys): a guard never takes the other URL's document, and so its
    keys, from Redis."""
    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import ec

    from tokenguard.sources import FetchSettings
    from tokenguard.testing import Fault

    other_key = ec.generate_private_key(ec.SECP256R1())
    jwk = {**json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(other_key.public_key())), "kid": "tenant-b"}
    metadata = {**issuer.metadata(), "jwks_uri": issuer.issuer + "/tenant-b/jwks"}
    issuer.faults["/tenant-b/metadata"] = Fault(status=200, body=json.dumps(metadata).encode())
    issuer.faults["/tenant-b/jwks"] = Fault(status=200, body=json.dumps({"keys": [jwk]}).encode())
    now = int(time.time())
    claims = {"iss": issuer.issuer, "aud": PAYMENTS, "sub": "u", "iat": now, "exp": now + 300}
    token = pyjwt.encode(claims, other_key, algorithm="ES256", headers={"kid": "tenant-b", "typ": "at+jwt"})

    made: list[tuple[TokenGuard, RedisCache]] = []

    def guard(**options: Any) -> TokenGuard:
        cache = RedisCache(redis_server.url, prefix=f"meta-{flavour}:")
        made.append(
            (
                TokenGuard.from_issuer(
                    issuer.issuer, audience=PAYMENTS, fetch=FetchSettings(), cache=cache, hash_key=HASH_KEY, **options
                ),
                cache,
            )
        )
        return made[-1][0]

    try:
        assert verify(guard(discovery_url=issuer.issuer + "/tenant-b/metadata"), token, flavour).subject == "u"
        with pytest.raises(InvalidToken):
            verify(guard(), token, flavour)
    finally:
        for made_guard, cache in made:
            made_guard.close()
            cache.close()
