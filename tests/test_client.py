"""Client side: OAuth token management (ClientCredentialsAuth) and the DIAN identity service."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from tokenguard import ConfigurationError, InvalidToken
from tokenguard.client import (
    AuthorizationCodeAuth,
    ClientCredentialsAuth,
    DianAuth,
    DianClient,
    DianError,
    InvalidClient,
    InvalidGrant,
    TokenEndpointError,
    TokenEndpointUnreachable,
    decrypt_field,
    encrypt_field,
    parse_token_response,
    pkce_pair,
)
from tokenguard.client.dian import COLOMBIA
from tokenguard.testing import LocalIssuer

from .conftest import UvicornServer
from .helpers import Clock
from .provider_fakes import DIAN_KEY
from .provider_fakes import DianFake as DianServer
from .test_adapters import fastapi_app
from .test_oidc_provider import OIDCProvider

pytestmark = pytest.mark.integration

NOW = 1_800_000_000.0
GOOD = {"access_token": "at", "token_type": "Bearer", "expires_in": 300}


# ---------------------------------------------------------------- token answers (pure)


def test_token_answer_parsed() -> None:
    """A proper answer gives a token expiring expires_in seconds from now."""
    token = parse_token_response(200, {"cache-control": "no-store"}, json.dumps(GOOD).encode(), NOW)
    assert token.access_token == "at" and token.expires_at == NOW + 300
    assert not token.needs_refresh(NOW + 269, 30) and token.needs_refresh(NOW + 270, 30)


@pytest.mark.parametrize(
    "answer",
    [
        {**GOOD, "token_type": "mac"},
        {**GOOD, "expires_in": "300"},
        {**GOOD, "expires_in": True},
        {k: v for k, v in GOOD.items() if k != "access_token"},
        ["not", "an", "object"],
    ],
)
def test_bad_token_answers_refused(answer: Any) -> None:
    """Wrong token_type, non-numeric expires_in, missing token, non-object: refused."""
    with pytest.raises(TokenEndpointError):
        parse_token_response(200, {"cache-control": "no-store"}, json.dumps(answer).encode(), NOW)


def test_token_type_case_insensitive() -> None:
    """token_type compares case-insensitively (RFC 6749 §7.1)."""
    answer = {**GOOD, "token_type": "bearer"}
    assert parse_token_response(200, {"cache-control": "no-store"}, json.dumps(answer).encode(), NOW).token_type


def test_no_store_policy(caplog: pytest.LogCaptureFixture) -> None:
    """A missing Cache-Control: no-store warns by default and fails under 'refuse'."""
    parse_token_response(200, {}, json.dumps(GOOD).encode(), NOW)
    assert "no-store" in caplog.text
    with pytest.raises(TokenEndpointError, match="no-store"):
        parse_token_response(200, {}, json.dumps(GOOD).encode(), NOW, no_store="refuse")


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b'{"error":"invalid_client","error_description":"bad secret"}', InvalidClient),
        (b'{"error":"invalid_grant"}', InvalidGrant),
        (b'{"error":"invalid_scope"}', TokenEndpointError),
        (b"<html>", TokenEndpointError),
    ],
)
def test_error_answers_are_typed(body: bytes, kind: type[TokenEndpointError]) -> None:
    """RFC 6749 §5.2 errors surface as typed exceptions with the server's code and text."""
    with pytest.raises(kind) as info:
        parse_token_response(400, {}, body, NOW)
    assert type(info.value) is kind
    if body.startswith(b"{"):
        assert info.value.error == json.loads(body)["error"]


# ---------------------------------------------------------------- against a real oidc-provider


@pytest.mark.parametrize(
    ("client_id", "secret", "method"),
    [("app", "app-secret", "client_secret_basic"), ("rs-post", "rs-post-secret", "client_secret_post")],
)
def test_oauth_auth_against_oidc_provider(
    oidc_provider: OIDCProvider, client_id: str, secret: str, method: str
) -> None:
    """Discovery, client credentials, Bearer attached: a protected API accepts the call."""
    auth = ClientCredentialsAuth(
        client_id,
        secret,
        issuer=oidc_provider.issuer,
        auth_method=method,
        scope="read",
        resource="https://api.test/",  # type: ignore[arg-type]
    )
    with oidc_provider.guard() as guard, UvicornServer(fastapi_app(guard)) as api, httpx.Client(auth=auth) as http:
        assert http.get(f"{api.url}/books").status_code == 200
        assert http.get(f"{api.url}/books").status_code == 200
    assert auth.token_requests == 1


def test_revoked_on_close_and_single_flight(oidc_provider: OIDCProvider) -> None:
    """Concurrent callers share one token request; close() revokes the token (RFC 7009)."""
    auth = ClientCredentialsAuth("app", "app-secret", issuer=oidc_provider.issuer, scope="read")
    tokens: list[str] = []
    barrier = threading.Barrier(20)

    def grab() -> None:
        barrier.wait()
        tokens.append(auth.get_token_sync().access_token)

    threads = [threading.Thread(target=grab) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert auth.token_requests == 1 and len(set(tokens)) == 1
    with oidc_provider.guard(introspection_cache_ttl=0) as guard:
        assert guard.verify_sync(tokens[0]).token_type == "opaque"
        auth.close()
        with pytest.raises(InvalidToken, match="not active"):
            guard.verify_sync(tokens[0])


def test_retry_once_on_401_with_a_fresh_token(oidc_provider: OIDCProvider) -> None:
    """When the API refuses the token (revoked), the auth fetches a new one and retries once."""
    auth = ClientCredentialsAuth("app", "app-secret", issuer=oidc_provider.issuer, scope="read")
    guard = oidc_provider.guard(introspection_cache_ttl=0)
    with UvicornServer(fastapi_app(guard)) as api, httpx.Client(auth=auth) as http, guard:
        assert http.get(f"{api.url}/books").status_code == 200
        oidc_provider.revoke(auth.get_token_sync().access_token)
        assert http.get(f"{api.url}/books").status_code == 200
    assert auth.token_requests == 2


def test_async_auth(oidc_provider: OIDCProvider) -> None:
    """The async flow shares one token among concurrent tasks."""
    auth = ClientCredentialsAuth(
        "app", "app-secret", issuer=oidc_provider.issuer, scope="read", resource="https://api.test/"
    )

    async def main() -> list[str]:
        return [t.access_token for t in await asyncio.gather(*(auth.get_token() for _ in range(20)))]

    assert len(set(asyncio.run(main()))) == 1
    assert auth.token_requests == 1


def test_private_key_jwt_assertion_shape() -> None:
    """private_key_jwt sends a signed assertion with iss = sub = client_id and aud = token endpoint."""
    import jwt as pyjwt

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    seen: dict[str, str] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(parse_qsl(request.content.decode()))
        return httpx.Response(200, json=GOOD, headers={"Cache-Control": "no-store"})

    auth = ClientCredentialsAuth(
        "svc", token_endpoint="https://as.test/token", auth_method="private_key_jwt", private_key=key
    )
    transport = httpx.MockTransport(handler)
    original = httpx.Client.__init__

    def with_mock(self: httpx.Client, *args: Any, **kwargs: Any) -> None:
        kwargs["transport"] = transport
        original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(httpx.Client, "__init__", with_mock)
        assert auth.get_token_sync().access_token == "at"
    claims = pyjwt.decode(
        seen["client_assertion"], key.public_key(), algorithms=["RS256"], audience="https://as.test/token"
    )
    assert claims["iss"] == claims["sub"] == "svc"
    assert seen["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def test_configuration_errors() -> None:
    """Missing endpoint or credentials are configuration errors, raised at construction."""
    with pytest.raises(ConfigurationError):
        ClientCredentialsAuth("svc", "secret")
    with pytest.raises(ConfigurationError):
        ClientCredentialsAuth("svc", token_endpoint="https://as/token")
    with pytest.raises(ConfigurationError):
        ClientCredentialsAuth("svc", token_endpoint="https://as/token", auth_method="private_key_jwt")


def test_liberty_token_endpoint_refresh_grant() -> None:
    """Liberty's /oidc/endpoint/<p>/token: Basic auth, refresh_token honoured before expiry, proactively."""
    clock = Clock()
    with LocalIssuer(path="/oidc/endpoint/OP", algorithms=("RS256",)) as server:
        auth = ClientCredentialsAuth(
            server.client_id, server.client_secret, token_endpoint=server.token_endpoint, refresh_margin=30, clock=clock
        )
        first = auth.get_token_sync()
        assert first.refresh_token and first.id_token
        assert auth.get_token_sync() is first
        clock.now += 271  # within the 30 s margin of the 300 s lifetime
        second = auth.get_token_sync()
        assert second.access_token != first.access_token
        assert [r["grant_type"] for r in server.token_requests] == ["client_credentials", "refresh_token"]
        assert "client_secret" not in server.token_requests[0]  # HTTP Basic, not the body


def test_refresh_refused_falls_back_to_client_grant() -> None:
    """An invalid refresh token leads to a fresh client-credentials request."""
    clock = Clock()
    with LocalIssuer(algorithms=("RS256",)) as server:
        auth = ClientCredentialsAuth(
            server.client_id, server.client_secret, token_endpoint=server.token_endpoint, clock=clock
        )
        auth.get_token_sync()
        server._refresh.clear()  # the server forgot every refresh token
        clock.now += 290
        assert auth.get_token_sync().access_token
        assert [r["grant_type"] for r in server.token_requests] == ["client_credentials", "client_credentials"]


# ---------------------------------------------------------------- DIAN

KEY = DIAN_KEY


def test_dian_encryption_format() -> None:
    """[value]-[YYYY-MM-DDTHH:MM:SS] in Colombian time, AES-128-CBC, zero IV, PKCS#7, base64."""
    ciphertext = encrypt_field("s3cret", KEY, NOW)
    value, stamp = decrypt_field(ciphertext, KEY)
    assert value == "s3cret"
    assert stamp == datetime.fromtimestamp(int(NOW), COLOMBIA)
    assert stamp.utcoffset().total_seconds() == -5 * 3600  # type: ignore[union-attr]
    with pytest.raises(ConfigurationError):
        encrypt_field("x", "short-key", NOW)


def dian_client(server: DianServer, **options: Any) -> DianClient:
    return DianClient(
        server.url,
        client_id="my-client",
        client_secret="client-secret",
        encryption_key=KEY,
        tipo_documento="US",
        nro_documento="1234567890",
        nit="900123456",
        password="pw",
        sleep=lambda s: None,
        **options,
    )


def test_dian_login_refresh_revoke() -> None:
    """Login with encrypted fields, refresh with the refresh token, revoke with the access token."""
    with DianServer() as server:
        client = dian_client(server)
        token = client.login()
        assert token.client_id == "my-client"  # surrounding spaces trimmed
        refreshed = client.refresh(token)
        assert refreshed.access_token != token.access_token
        client.revoke(refreshed)
        assert refreshed.access_token in server.revoked
        client.close()


def test_dian_errors_and_retries() -> None:
    """401 is invalid credentials, 400 surfaces its error object, 429/503 are retried (bounded)."""
    with DianServer() as server:
        client = dian_client(server, max_retries=2)
        server.fail_next = [(429, {}, b"{}"), (503, {}, b"{}")]
        assert client.login().access_token
        assert server.calls == ["login", "login", "login"]
        server.fail_next = [(429, {}, b"{}")] * 3
        with pytest.raises(DianError) as busy:
            client.login()
        assert busy.value.status == 429
        server.fail_next = [(400, {}, b'{"error": "bad_request", "message": "nit missing"}')]
        with pytest.raises(DianError) as bad:
            client.login()
        assert bad.value.status == 400 and bad.value.detail == {"error": "bad_request", "message": "nit missing"}
        wrong = DianClient(
            server.url, client_id="my-client", client_secret="nope", encryption_key=KEY,
            tipo_documento="US", nro_documento="1", nit="900123456", password="pw",
        )  # fmt: skip
        with pytest.raises(DianError) as refused:
            wrong.login()
        assert refused.value.status == 401
        wrong.close()
        client.close()


def test_dian_encryption_can_be_switched_off() -> None:
    """DIAN's test environment accepts plaintext fields."""
    with DianServer() as server:
        server.encrypted = False
        client = dian_client(server, encrypt=False)
        assert client.login().access_token
        client.close()


def test_dian_auth_refreshes_before_expiry_and_revokes_on_close() -> None:
    """DianAuth logs in once, refreshes near expiry (re-logging in if refresh fails), revokes on close."""
    clock = Clock()
    with DianServer(expire_in=600) as server:
        server.clock = clock
        auth = DianAuth(dian_client(server, clock=clock), refresh_margin=60)
        seen: list[str] = []

        def api(request: httpx.Request) -> httpx.Response:
            seen.append(request.headers["Authorization"])
            return httpx.Response(200)

        with httpx.Client(auth=auth, transport=httpx.MockTransport(api)) as http:
            http.get("https://downstream.test/a")
            http.get("https://downstream.test/b")
            clock.now += 541
            http.get("https://downstream.test/c")
            server.refresh.clear()  # refresh will fail: a fresh login follows
            clock.now += 541
            http.get("https://downstream.test/d")
        assert server.calls == ["login", "refresh", "refresh", "login"]
        assert seen[0] == seen[1] != seen[2] != seen[3]
        last = seen[3].split(" ", 1)[1]
        auth.close()
        assert last in server.revoked


# ---------------------------------------------------------------- RFC 6749 §5.1 caching headers, https, reachability

BOTH = {"cache-control": "no-store", "pragma": "no-cache"}


@pytest.mark.parametrize(
    ("headers", "lacking"),
    [
        (BOTH, None),
        ({"cache-control": "no-store, private", "pragma": "x, No-Cache"}, None),
        ({"cache-control": "no-store"}, "Pragma: no-cache"),
        ({"pragma": "no-cache"}, "Cache-Control: no-store"),
        ({}, "Cache-Control: no-store and Pragma: no-cache"),
        ({"cache-control": "no-store", "pragma": "no-cache-please"}, "Pragma: no-cache"),
    ],
)
def test_token_answer_caching_headers(
    headers: dict[str, str], lacking: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """Both Cache-Control: no-store and Pragma: no-cache are required; one policy governs both."""
    body = json.dumps(GOOD).encode()
    with caplog.at_level("WARNING", logger="tokenguard.client"):
        assert parse_token_response(200, headers, body, NOW).access_token == "at"
    if lacking is None:
        assert caplog.records == []
        assert parse_token_response(200, headers, body, NOW, no_store="refuse").access_token == "at"
    else:
        assert f"lacks {lacking} " in caplog.text
        with pytest.raises(TokenEndpointError, match=lacking):
            parse_token_response(200, headers, body, NOW, no_store="refuse")
        assert parse_token_response(200, headers, body, NOW, no_store="ignore").access_token == "at"


@given(cache_control=st.text(max_size=40), pragma=st.text(max_size=40))
def test_caching_header_check_never_crashes(cache_control: str, pragma: str) -> None:
    """Any header text either passes the check or is refused as a TokenEndpointError, never another exception."""
    headers = {"cache-control": cache_control, "pragma": pragma}
    try:
        parse_token_response(200, headers, json.dumps(GOOD).encode(), NOW, no_store="refuse")
    except TokenEndpointError as exc:
        assert "lacks" in str(exc)


@pytest.mark.parametrize(
    "options",
    [
        {"token_endpoint": "http://as.example/token"},
        {"issuer": "http://as.example"},
        {"token_endpoint": "https://as.example/token", "revocation_endpoint": "http://as.example/revoke"},
        {"token_endpoint": "ftp://as.example/token"},
    ],
)
def test_token_client_requires_https(options: dict[str, str]) -> None:
    """The guard's rule: the secret never goes to a plain-http, non-loopback endpoint."""
    with pytest.raises(ConfigurationError):
        ClientCredentialsAuth("svc", "secret", **options)  # type: ignore[arg-type]


def test_token_client_https_exemptions() -> None:
    """Loopback addresses are exempt; require_https=False opens plain http knowingly."""
    ClientCredentialsAuth("svc", "secret", token_endpoint="http://127.0.0.1:9/token")
    ClientCredentialsAuth("svc", "secret", token_endpoint="http://[::1]:9/token")
    ClientCredentialsAuth("svc", "secret", token_endpoint="http://as.example/token", require_https=False)
    with pytest.raises(ConfigurationError, match="auth_method"):
        ClientCredentialsAuth("svc", "secret", token_endpoint="https://as/token", auth_method="basic")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="no_store"):
        ClientCredentialsAuth("svc", "secret", token_endpoint="https://as/token", no_store="never")  # type: ignore[arg-type]


def test_discovered_plain_http_token_endpoint_refused() -> None:
    """A discovered token endpoint on plain http to another host is refused before the secret is sent."""
    from .provider_fakes import FakeServer, Recorded, Reply, json_reply

    class Metadata(FakeServer):
        def handle(self, request: Recorded) -> Reply:
            if request.path == "/.well-known/openid-configuration":
                return json_reply(200, {"issuer": self.origin, "token_endpoint": "http://as.example/token"})
            return 404, {}, b""

    with Metadata() as server:
        auth = ClientCredentialsAuth("svc", "secret", issuer=server.origin)
        with pytest.raises(TokenEndpointError, match="https") as info:
            auth.get_token_sync()
        assert info.value.error == "invalid_metadata"
        assert all(r.method == "GET" for r in server.requests)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("where", ["token_endpoint", "issuer"])
def test_unreachable_token_endpoint_is_our_error_with_the_cause(where: str) -> None:
    """Given or discovered, an unreachable endpoint is TokenEndpointUnreachable caused by the transport error."""
    url = f"http://127.0.0.1:{_closed_port()}"
    options = {"token_endpoint": url + "/token"} if where == "token_endpoint" else {"issuer": url}
    auth = ClientCredentialsAuth("svc", "secret", **options)  # type: ignore[arg-type]
    with pytest.raises(TokenEndpointUnreachable) as info:
        auth.get_token_sync()
    assert isinstance(info.value.__cause__, httpx.TransportError)
    assert isinstance(info.value, TokenEndpointError) and info.value.error == "unreachable"

    async def main() -> None:
        await auth.get_token()

    with pytest.raises(TokenEndpointUnreachable) as async_info:
        asyncio.run(main())
    assert isinstance(async_info.value.__cause__, httpx.TransportError)


def test_unreachable_during_code_exchange() -> None:
    """The code exchange maps transport failures the same way."""
    auth = AuthorizationCodeAuth(
        "svc", "secret", token_endpoint=f"http://127.0.0.1:{_closed_port()}/token", redirect_uri="https://rp/cb"
    )
    with pytest.raises(TokenEndpointUnreachable) as info:
        auth.exchange_code_sync("code")
    assert isinstance(info.value.__cause__, httpx.ConnectError)


def test_pkce_pair_is_s256() -> None:
    """pkce_pair() returns a 43-character verifier and its S256 challenge (RFC 7636 §4.2)."""
    import base64
    import hashlib

    verifier, challenge = pkce_pair()
    assert len(verifier) == 43 and verifier != pkce_pair()[0]
    digest = hashlib.sha256(verifier.encode()).digest()
    assert challenge == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def test_short_lived_tokens_are_reused_for_half_their_life(issuer: LocalIssuer) -> None:
    """A 20 s token with the default 30 s margin is reused, not re-requested for every call."""
    clock = Clock()
    issuer.token_lifetime = 20
    auth = ClientCredentialsAuth(
        issuer.client_id, issuer.client_secret, token_endpoint=issuer.token_endpoint, clock=clock
    )
    first = auth.get_token_sync()
    assert auth.get_token_sync() is first
    clock.now += 9
    assert auth.get_token_sync() is first
    clock.now += 2  # past half its life: refreshed, early enough
    assert auth.get_token_sync() is not first
    assert auth.token_requests == 2
    assert not parse_token_response(200, {}, b'{"access_token":"a","token_type":"Bearer"}', 0).needs_refresh(1e12, 30)


def test_credentials_in_a_token_endpoint_url_never_reach_a_log_or_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A user:password@ or query secret in a configured endpoint URL stays out of every log record (httpx's
    own INFO request line included) and of error messages."""
    with LocalIssuer(algorithms=("RS256",)) as server:
        host = server.token_endpoint.split("://", 1)[1]
        url = f"http://svc:hunter2@{host}?key=hunter2"
        auth = ClientCredentialsAuth("svc", "wrong-secret", token_endpoint=url)
        with caplog.at_level("DEBUG"), pytest.raises(TokenEndpointError):
            auth.get_token_sync()
    refused = [r for r in caplog.records if getattr(r, "reason", None) == "client_auth_failed"]
    assert refused, "the 401 is logged as our credentials' fault"
    assert any(r.name == "httpx" and "/token" in r.getMessage() for r in caplog.records), "httpx logged the call"
    assert not any("hunter2" in r.getMessage() or "hunter2" in str(r.__dict__) for r in caplog.records)
    closed = f"http://svc:hunter2@127.0.0.1:{_closed_port()}/token?key=hunter2"
    with pytest.raises(TokenEndpointUnreachable) as info:
        ClientCredentialsAuth("svc", "secret", token_endpoint=closed).get_token_sync()
    assert "hunter2" not in str(info.value)
