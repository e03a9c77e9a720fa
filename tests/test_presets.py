"""Provider presets against loopback servers reproducing each provider's wire format."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt as pyjwt
import pytest

from tokenguard import InvalidToken
from tokenguard.presets import DIAN_ISSUER, dian, ibm_liberty, identity_server, logto
from tokenguard.testing import LocalIssuer

pytestmark = pytest.mark.integration


def test_logto_jwt_and_opaque() -> None:
    """Logto: /oidc issuer, /oidc/jwks, /oidc/token/introspection; at+jwt with the resource as aud."""
    with LocalIssuer(
        path="/oidc", algorithms=("ES256",), endpoints={"introspection": "/token/introspection"}
    ) as server:
        with logto(
            server.origin,
            resource="https://api.example",
            client_id=server.client_id,
            client_secret=server.client_secret,
        ) as guard:
            jwt_claims = guard.verify_sync(server.issue(alg="ES256", audience="https://api.example", scope="read"))
            assert jwt_claims.scopes == {"read"}
            opaque = server.issue_opaque(audience="https://api.example", scope="read")
            assert guard.verify_sync(opaque).token_type == "opaque"
            assert set(server.requests) == {"/jwks", "/token/introspection"}
            # An inactive answer is {"active": false} with no sub.
            with pytest.raises(InvalidToken, match="not active"):
                guard.verify_sync("unknown-opaque-token")
            # Logto JWTs carry typ at+jwt: an ID token is refused.
            with pytest.raises(InvalidToken, match="type"):
                guard.verify_sync(server.issue(alg="ES256", audience="https://api.example", typ="JWT"))


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
def test_logto_client_auth_methods(auth_method: str) -> None:
    """Logto accepts HTTP Basic or client_id/client_secret in the body."""
    with LocalIssuer(
        path="/oidc", algorithms=("ES256",), endpoints={"introspection": "/token/introspection"}
    ) as server:
        with logto(
            server.origin + "/oidc",
            resource="https://api.example",
            client_id=server.client_id,
            client_secret=server.client_secret,
            auth_method=auth_method,  # type: ignore[arg-type]
        ) as guard:
            assert guard.verify_sync(server.issue_opaque(audience="https://api.example")).subject == "user-1"
        assert ("client_secret" in server.introspection_requests[-1]) == (auth_method == "client_secret_post")


def test_ibm_liberty_layout() -> None:
    """Liberty: /oidc/endpoint/<provider>/{jwk,introspect}; short opaque tokens; JWTs when configured."""
    with LocalIssuer(
        path="/oidc/endpoint/OP", algorithms=("RS256",), endpoints={"jwks": "/jwk", "introspection": "/introspect"}
    ) as server:
        with ibm_liberty(
            server.origin, "OP", audience=None, client_id=server.client_id, client_secret=server.client_secret
        ) as guard:
            assert guard.verify_sync(server.issue(audience=None, typ=None)).issuer == server.issuer
            opaque = server.issue_opaque(audience=None)
            assert guard.verify_sync(opaque).token_type == "opaque"
            assert set(server.requests) == {"/jwk", "/introspect"}


def test_identity_server_shapes() -> None:
    """IdentityServer: scope array + amr array in JWTs; aud array, scope string, amr string when introspected."""
    with LocalIssuer(
        algorithms=("RS256",),
        endpoints={"jwks": "/.well-known/openid-configuration/jwks", "introspection": "/connect/introspect"},
        client_id="library-api",
        client_secret="api-secret",
    ) as server:
        with identity_server(server.issuer, api_name="library-api", api_secret="api-secret") as guard:
            jwt_token = server.issue(
                audience="library-api",
                scope=["openid", "library-api-checked-books"],
                extra_claims={"amr": ["pwd", "mfa"]},
            )
            claims = guard.verify_sync(jwt_token)
            assert claims.scopes == {"openid", "library-api-checked-books"}
            guard.require(claims, "library-api-checked-books")
            reference = "A" * 64  # reference tokens are 64 hex characters
            token = server.issue_opaque(
                audience=["library-api", "other-api"],
                scope="openid library-api-checked-books",
                extra_claims={"amr": "pwd"},
            )
            server._opaque[reference] = server._opaque.pop(token)
            introspected = guard.verify_sync(reference)
            assert introspected.scopes == {"openid", "library-api-checked-books"}
            assert introspected.audience == ("library-api", "other-api")
            assert introspected["amr"] == "pwd"
            sent = server.introspection_requests[-1]
            assert sent == {"token": reference, "token_type_hint": "access_token"}


def _dian_token(secret: bytes, **overrides: object) -> str:
    payload = {
        "iss": DIAN_ISSUER,
        "aud": ["my-client-id"],
        "sub": "13|900123456|1234567890",
        "exp": 4_000_000_000,
        "iat": 1_700_000_000,
        "url": "https://muisca.dian.gov.co/WebIdentidad/",
        **overrides,
    }
    # DIAN's JSON escapes slashes ("\/"): build the payload bytes that way.
    raw = json.dumps(payload, separators=(",", ":")).replace("/", "\\/").encode()
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    signing_input = f"{header}.{body}"
    import hmac

    signature = base64.urlsafe_b64encode(hmac.digest(secret, signing_input.encode(), "sha256")).rstrip(b"=").decode()
    return f"{signing_input}.{signature}"


def test_dian_id_token() -> None:
    """DIAN idToken: HS256, aud array with the client id, composite sub, escaped slashes."""
    secret = b"d" * 32
    with dian("my-client-id", secret) as guard:
        claims = guard.verify_sync(_dian_token(secret))
        assert claims.subject == "13|900123456|1234567890"
        assert claims["url"] == "https://muisca.dian.gov.co/WebIdentidad/"
        with pytest.raises(InvalidToken, match="audience"):
            guard.verify_sync(_dian_token(secret, aud=["someone-else"]))
        with pytest.raises(InvalidToken):
            guard.verify_sync(_dian_token(b"x" * 32))
        # An RS256 token can never pass an HS256-only configuration.
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        forged = pyjwt.encode({"iss": DIAN_ISSUER, "aud": ["my-client-id"], "exp": 4_000_000_000}, key, "RS256")
        with pytest.raises(InvalidToken, match="algorithm"):
            guard.verify_sync(forged)


def test_custom_verifier_for_dian_access_tokens() -> None:
    """A custom verifier covers opaque tokens with no introspection; results are cached and scope-checked."""
    import asyncio
    import time

    from tokenguard import InsufficientScope, TokenGuard

    calls: list[str] = []
    sessions = {
        "dian-access-token-1": {"sub": "900123456", "scope": "facturacion", "exp": time.time() + 600},
        "eyJkaWFuIjp0cnVlfQ.not.jws": {"sub": "900123457", "exp": time.time() + 600},
    }

    def lookup(token: str) -> dict[str, object] | None:
        calls.append(token)
        if token in sessions:
            return sessions[token]
        if token.startswith("dian-"):
            raise InvalidToken("unknown DIAN session")
        return None

    with TokenGuard(verifier=lookup) as guard:
        claims = guard.verify_sync("dian-access-token-1")
        assert claims.token_type == "custom" and claims.scopes == {"facturacion"}
        assert guard.verify_sync("dian-access-token-1") is claims
        assert calls == ["dian-access-token-1"]  # second call served from the cache
        # A JWS-shaped opaque token that does not parse as a JWS still reaches the verifier.
        assert guard.verify_sync("eyJkaWFuIjp0cnVlfQ.not.jws").subject == "900123457"
        with pytest.raises(InsufficientScope):
            guard.require(claims, "nomina")
        with pytest.raises(InvalidToken, match="unknown DIAN session"):
            guard.verify_sync("dian-other")
        with pytest.raises(InvalidToken):
            guard.verify_sync("not-dian")  # verifier says None and nothing else is configured

    async def async_lookup(token: str) -> dict[str, object] | None:
        return {"sub": "async", "exp": time.time() + 60} if token == "ok" else None

    async def main() -> str | None:
        async with TokenGuard(verifier=async_lookup) as guard:
            return (await guard.verify("ok")).subject

    assert asyncio.run(main()) == "async"


def test_identity_server_revocation_check_of_jwts() -> None:
    """With check_revocation, a revoked JWT is refused although its signature is fine."""
    with LocalIssuer(
        algorithms=("RS256",),
        endpoints={"introspection": "/connect/introspect"},
        client_id="library-api",
        client_secret="api-secret",
    ) as server:
        with identity_server(
            server.issuer, api_name="library-api", api_secret="api-secret", check_revocation=True
        ) as guard:
            token = server.issue(audience="library-api", scope=["library-api-checked-books"])
            assert guard.verify_sync(token).token_type == "jwt"
            assert server.requests["/connect/introspect"] == 1
            guard.verify_sync(token)  # cached: no second introspection
            assert server.requests["/connect/introspect"] == 1
        server.revoke(token)
        with (
            identity_server(
                server.issuer, api_name="library-api", api_secret="api-secret", check_revocation=True
            ) as fresh,
            pytest.raises(InvalidToken, match="not active"),
        ):
            fresh.verify_sync(token)


def test_check_revocation_needs_introspection() -> None:
    """check_revocation without client credentials is a configuration error."""
    from tokenguard import ConfigurationError, TokenGuard

    with pytest.raises(ConfigurationError):
        TokenGuard.from_issuer("https://idp.example", audience="api", check_revocation=True)


@pytest.mark.parametrize("kind", ["jwt", "opaque"])
def test_userinfo_enrichment(kind: str) -> None:
    """userinfo() fetches the subject's UserInfo from the issuer's metadata, cached like introspection."""
    import asyncio

    with LocalIssuer(algorithms=("ES256",), endpoints={"userinfo": "/connect/userinfo"}) as server:
        guard = server.guard()
        token = server.issue(alg="ES256", subject="alice") if kind == "jwt" else server.issue_opaque(subject="alice")
        info = guard.userinfo_sync(token)
        assert info.subject == "alice" and info["email"] == "alice@example.test"
        guard.userinfo_sync(token)
        assert server.requests["/connect/userinfo"] == 1
        assert asyncio.run(guard.userinfo(token))["name"] == "Test User"
        assert server.requests["/connect/userinfo"] == 1


def test_userinfo_refusal_and_subject_mismatch() -> None:
    """A refused token is invalid_token; an answer for another subject is never used."""
    from tokenguard.testing import Fault

    with LocalIssuer(algorithms=("ES256",)) as server:
        guard = server.guard()
        token = server.issue(alg="ES256", subject="alice")
        server.faults["/userinfo"] = Fault(status=200, body=b'{"sub": "mallory", "email": "m@evil"}')
        with pytest.raises(InvalidToken, match="another subject"):
            guard.userinfo_sync(token)
        server.faults["/userinfo"] = Fault(status=401, body=b"{}")
        with pytest.raises(InvalidToken, match="refused"):
            guard.userinfo_sync(token)
        server.faults["/userinfo"] = Fault(status=500)
        from tokenguard import ServiceUnavailable

        with pytest.raises(ServiceUnavailable):
            guard.userinfo_sync(token)


# ---------------------------------------------------------------- caller keywords override the preset's defaults

ORIGIN = "https://idp.example"


def _issuer_config(guard: Any) -> Any:
    (runtime,) = guard._issuers.values()
    return runtime.config


OVERRIDES: list[tuple[str, Any]] = [
    ("auth_method", "client_secret_post"),
    ("audience", ["https://a.example", "https://b.example"]),
    ("jwks_uri", "https://keys.example/jwks.json"),
    ("introspection_endpoint", "https://idp.example/custom/introspect"),
    ("algorithms", ["ES256"]),
]


def _read(guard: Any, keyword: str) -> Any:
    config = _issuer_config(guard)
    if keyword == "auth_method":
        return guard._introspection.auth_method
    if keyword == "introspection_endpoint":
        return guard._introspection.endpoint
    if keyword == "audience":
        return list(config.audience)
    if keyword == "algorithms":
        return sorted(config.policy().algorithms)
    return getattr(config, keyword)


PRESETS: dict[str, Any] = {
    # logto's own name for the audience is resource; audience= is accepted as its synonym.
    "logto": lambda **kw: logto(
        ORIGIN, client_id="m2m", client_secret="s", **(kw if "audience" in kw else {"resource": "https://r"} | kw)
    ),
    "ibm_liberty": lambda **kw: ibm_liberty(
        ORIGIN, "OP", client_id="rs", client_secret="s", **({"audience": None} | kw)
    ),
    "identity_server": lambda **kw: identity_server(ORIGIN, api_name="library-api", api_secret="s", **kw),
}


@pytest.mark.parametrize(("keyword", "value"), OVERRIDES, ids=[k for k, _ in OVERRIDES])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_caller_keyword_overrides_the_preset(preset: str, keyword: str, value: Any) -> None:
    """Every keyword a preset fills in can be given by the caller, and the caller's value wins."""
    options = {keyword: value}
    with PRESETS[preset](**options) as guard:
        assert _read(guard, keyword) == value


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("audience", ["my-client-id", "other-client"]),
        ("algorithms", ["HS256", "HS512"]),
        ("issuer", "https://muisca.example"),
        ("leeway", 5),
        ("hmac_keys", {"kid-1": b"e" * 64}),
    ],
)
def test_dian_caller_keyword_overrides_the_preset(keyword: str, value: Any) -> None:
    """dian(): audience, algorithms, issuer, leeway and hmac_keys given by the caller win."""
    with dian("my-client-id", b"d" * 32, **{keyword: value}) as guard:
        config = _issuer_config(guard)
        if keyword == "algorithms":
            assert sorted(config.policy().algorithms) == value
        elif keyword == "audience":
            assert list(config.audience) == value
        else:
            assert getattr(config, keyword) == value


def test_preset_defaults_without_overrides() -> None:
    """Without overrides each preset fills in its provider's documented values."""
    with logto(ORIGIN, resource="https://r", client_id="m2m", client_secret="s") as guard:
        assert _issuer_config(guard).jwks_uri == ORIGIN + "/oidc/jwks"
        assert guard._introspection.endpoint == ORIGIN + "/oidc/token/introspection"
    with ibm_liberty(ORIGIN, "OP", audience=None, client_id="rs", client_secret="s") as guard:
        assert _issuer_config(guard).jwks_uri == ORIGIN + "/oidc/endpoint/OP/jwk"
        assert guard._introspection.auth_method == "client_secret_basic"
    with identity_server(ORIGIN, api_name="library-api", api_secret="s") as guard:
        assert _issuer_config(guard).audience == "library-api"
        assert guard._introspection.endpoint == ORIGIN + "/connect/introspect"
    with dian("my-client-id", b"d" * 32) as guard:
        assert sorted(_issuer_config(guard).policy().algorithms) == ["HS256"]


def test_logto_resource_and_audience_conflict() -> None:
    """logto() takes resource or its synonym audience, not both, and not neither."""
    from tokenguard import ConfigurationError

    with pytest.raises(ConfigurationError, match="resource or audience"):
        logto(ORIGIN, resource="https://r", audience="https://a")
    with pytest.raises(ConfigurationError, match="resource is required"):
        logto(ORIGIN)
