"""RFC 9701 signed introspection answers from the real oidc-provider (its jwtIntrospection feature)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import jwt as pyjwt
import pytest

from tokenguard import InvalidToken, ServiceUnavailable, TokenGuard
from tokenguard._effects import HttpReply
from tokenguard.keys import KeySet, parse_jwk
from tokenguard.redis_cache import RedisCache
from tokenguard.signed_introspection import open_signed_answer
from tokenguard.testing import LocalIssuer

from .conftest import RedisServer
from .helpers import RSA_KEY
from .test_oidc_provider import RESOURCE, OIDCProvider

pytestmark = pytest.mark.integration


def signed_guard(provider: OIDCProvider, client: str = "rs-basic", **options: Any) -> TokenGuard:
    return TokenGuard.from_issuer(
        provider.issuer,
        audience=RESOURCE,
        client_id=client,
        client_secret=f"{client}-secret",
        signed_introspection=True,
        **options,
    )


def test_signed_answer_accepted(oidc_provider: OIDCProvider) -> None:
    """An opaque token is introspected with a signed answer, verified with the provider's JWKS."""
    seen: list[str] = []

    def record(response: httpx.Response) -> None:
        seen.append(response.headers.get("content-type", ""))

    client = httpx.Client(event_hooks={"response": [record]})
    with signed_guard(oidc_provider, http_client=client) as guard:
        claims = guard.verify_sync(oidc_provider.token(resource=None, scope="read"))
        assert claims.token_type == "opaque"
        assert claims.scopes == {"read"}
        assert claims.client_id == "app"
        assert any(c.startswith("application/token-introspection+jwt") for c in seen)
        revoked = oidc_provider.token(resource=None)
        oidc_provider.revoke(revoked)
        with pytest.raises(InvalidToken, match="not active"):
            guard.verify_sync(revoked)
    client.close()


def test_plain_answer_refused_when_signed_required(issuer: LocalIssuer) -> None:
    """A server answering in plain JSON (LocalIssuer): 503, never an acceptance of an unsigned answer."""
    guard = issuer.guard(signed_introspection=True)
    with pytest.raises(ServiceUnavailable, match="not a token-introspection"):
        guard.verify_sync(issuer.issue_opaque(scope="read"))


def _answer(payload: dict[str, Any], typ: str = "token-introspection+jwt", key: Any = RSA_KEY) -> HttpReply:
    body = pyjwt.encode(payload, key, algorithm="RS256", headers={"typ": typ, "kid": "k"})
    return HttpReply(200, {"content-type": "application/token-introspection+jwt"}, body.encode())


KEYS = KeySet.of([parse_jwk({**json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key())), "kid": "k"})])
GOOD = {"iss": "https://as.test", "aud": "rs", "iat": 1000, "token_introspection": {"active": True}}


@pytest.mark.parametrize(
    ("change", "typ", "reason"),
    [
        ({}, "JWT", "wrong typ"),
        ({"iss": "https://evil.test"}, "token-introspection+jwt", "wrong issuer"),
        ({"aud": "someone-else"}, "token-introspection+jwt", "not addressed"),
        ({"token_introspection": "yes"}, "token-introspection+jwt", "no token_introspection"),
        ({"iat": 99999}, "token-introspection+jwt", "future iat"),
    ],
)
def test_signed_answer_checks(change: dict[str, Any], typ: str, reason: str) -> None:
    """typ, iss, aud, iat and the inner member are each checked; failures are 503, never acceptance."""
    with pytest.raises(ServiceUnavailable, match=reason):
        open_signed_answer(_answer({**GOOD, **change}, typ), KEYS, issuer="https://as.test", client_id="rs", now=1000)
    opened = open_signed_answer(_answer(GOOD), KEYS, issuer="https://as.test", client_id="rs", now=1000)
    assert json.loads(opened.body) == {"active": True}


def test_forged_signed_answer() -> None:
    """An answer signed by another key, or sent as plain JSON, is refused."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(ServiceUnavailable, match="bad signature"):
        open_signed_answer(_answer(GOOD, key=other), KEYS, issuer="https://as.test", client_id="rs", now=1000)
    plain = HttpReply(200, {"content-type": "application/json"}, b'{"active": true}')
    with pytest.raises(ServiceUnavailable, match="not a token-introspection"):
        open_signed_answer(plain, KEYS, issuer="https://as.test", client_id="rs", now=1000)


def test_readiness_with_signed_answers(oidc_provider: OIDCProvider) -> None:
    """The readiness probe asks for and opens an RFC 9701 signed answer as a token's introspection does."""
    with signed_guard(oidc_provider) as guard:
        report = guard.check_sync()
        checks = {check.name: check for check in report}
        assert checks["introspection"].status == "ok", report
        assert report.ok
    wrong = TokenGuard.from_issuer(
        oidc_provider.issuer, audience=RESOURCE, client_id="rs-basic", client_secret="wrong", signed_introspection=True
    )
    with wrong as guard:
        check = {c.name: c for c in guard.check_sync()}["introspection"]
        assert check.status == "failed"
        assert "client credentials" in check.detail


def test_signed_introspection_with_a_wrong_secret_names_the_cause(oidc_provider: OIDCProvider) -> None:
    """A 401 to a request for a signed answer is still our credentials' fault: the 503 says so, every time."""
    wrong = TokenGuard.from_issuer(
        oidc_provider.issuer, audience=RESOURCE, client_id="rs-basic", client_secret="wrong", signed_introspection=True
    )
    with wrong as guard:
        for _ in range(2):
            with pytest.raises(ServiceUnavailable) as refused:
                guard.verify_sync(oidc_provider.token(resource=None, scope="read"))
            assert refused.value.reason == "client_auth_failed"
            assert "refused this API's client credentials (HTTP 401)" in refused.value.description


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_plain_answer_shared_by_another_guard_is_not_taken(
    issuer: LocalIssuer, redis_server: RedisServer, flavour: str
) -> None:
    """A guard requiring signed answers never accepts a token on a plain answer
    that a guard without that requirement shared through Redis (same endpoint, same client)."""
    token = issuer.issue_opaque(scope="read")
    plain = issuer.guard(cache=RedisCache(redis_server.url))
    signed = issuer.guard(cache=RedisCache(redis_server.url), signed_introspection=True)

    def verify(guard: TokenGuard) -> object:
        if flavour == "sync":
            return guard.verify_sync(token)

        async def run() -> object:
            try:
                return await guard.verify(token)
            finally:
                await guard.aclose()

        return asyncio.run(run())

    assert verify(plain)
    with pytest.raises(ServiceUnavailable, match="not a token-introspection"):
        verify(signed)
