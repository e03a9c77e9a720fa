"""The four providers end to end: presets and clients against loopback fakes built from each one's documentation."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenguard import ConfigurationError, InsufficientScope, InvalidToken, TokenError, TokenGuard
from tokenguard.client import (
    AsyncDianClient,
    AuthorizationCodeAuth,
    ClientCredentialsAuth,
    DianAuth,
    DianClient,
    DianError,
    InvalidClient,
    InvalidGrant,
    TokenEndpointError,
    pkce_pair,
)
from tokenguard.presets import dian, ibm_liberty, identity_server, logto

from .conftest import UvicornServer
from .helpers import Clock
from .provider_fakes import (
    DIAN_KEY,
    DianFake,
    FakeServer,
    GrantIDFake,
    LibertyFake,
    LogtoFake,
    Recorded,
    Reply,
    json_reply,
    plain_basic,
    rfc6749_basic,
)
from .test_adapters import fastapi_app

pytestmark = pytest.mark.integration

REDIRECT = "https://rp.example.com/callback"


# ---------------------------------------------------------------- IBM Liberty


def test_liberty_code_flow_with_pkce_then_refresh_and_revoke() -> None:
    """Liberty's documented grant: code + redirect_uri + code_verifier with Basic auth; refreshed, then revoked."""
    clock = Clock()
    with LibertyFake() as op:
        auth = AuthorizationCodeAuth(
            op.client_id, op.client_secret, issuer=op.issuer, redirect_uri=REDIRECT, no_store="refuse", clock=clock
        )
        verifier, challenge = pkce_pair()
        code = op.authorize(redirect_uri=REDIRECT, scope="openid read", code_challenge=challenge)
        token = auth.exchange_code_sync(code, code_verifier=verifier)
        assert token.refresh_token and token.id_token and token.scope == "openid read"
        assert token.expires_at == pytest.approx(clock.now + op.expires_in)
        sent = op.requests[-1]
        assert sent.path == "/oidc/endpoint/OP/token"
        assert sent.headers["content-type"].startswith("application/x-www-form-urlencoded")
        assert rfc6749_basic(sent.headers["authorization"]) == (op.client_id, op.client_secret)
        assert sent.form == {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
        }
        guard = ibm_liberty(
            op.origin, "OP", audience=None, client_id=op.client_id, client_secret=op.client_secret,
            introspection_cache_ttl=0,
        )  # fmt: skip
        with guard, UvicornServer(fastapi_app(guard)) as api, httpx.Client(auth=auth) as http:
            assert http.get(f"{api.url}/books").json() == {"sub": "alice"}
            clock.now += op.expires_in - 10  # inside the 30 s refresh margin
            assert http.get(f"{api.url}/books").status_code == 200
            refreshed = auth.get_token_sync()
            assert refreshed.access_token != token.access_token
            op.access.pop(refreshed.access_token)  # the provider forgot it: the API answers 401
            assert http.get(f"{api.url}/books").status_code == 200  # retried with a refreshed token
            grants = [r.form.get("grant_type") for r in op.requests if r.path.endswith("/token")]
            assert grants == ["authorization_code", "refresh_token", "refresh_token"]
            refreshed = auth.get_token_sync()
            auth.close()
            revoked = {"Authorization": f"Bearer {refreshed.access_token}"}
            assert http.get(f"{api.url}/books", auth=None, headers=revoked).status_code == 401


def test_liberty_code_exchange_refusals() -> None:
    """A wrong verifier, a reused code, no token yet, a refused refresh: each raises; no fallback to another grant."""
    clock = Clock()
    with LibertyFake() as op:
        auth = AuthorizationCodeAuth(
            op.client_id, op.client_secret, token_endpoint=op.token_endpoint, redirect_uri=REDIRECT, clock=clock
        )
        with pytest.raises(TokenEndpointError, match="login_required"):
            auth.get_token_sync()
        verifier, challenge = pkce_pair()
        code = op.authorize(redirect_uri=REDIRECT, scope="openid", code_challenge=challenge)
        with pytest.raises(InvalidGrant, match="PKCE"):
            auth.exchange_code_sync(code, code_verifier=pkce_pair()[0])
        with pytest.raises(InvalidGrant, match="invalid or was used"):
            auth.exchange_code_sync(code, code_verifier=verifier)  # a code is single-use, even after a failure
        code = op.authorize(redirect_uri="https://elsewhere.example/cb", scope="openid")
        with pytest.raises(InvalidGrant, match="redirect_uri"):
            auth.exchange_code_sync(code)
        code = op.authorize(redirect_uri=REDIRECT, scope="openid")
        auth.exchange_code_sync(code)
        op.refresh.clear()  # the provider forgot the refresh token
        clock.now += op.expires_in
        with pytest.raises(InvalidGrant):
            auth.get_token_sync()
        assert "client_credentials" not in [r.form.get("grant_type") for r in op.requests]
        wrong = AuthorizationCodeAuth(
            op.client_id, "wrong", token_endpoint=op.token_endpoint, redirect_uri=REDIRECT, clock=clock
        )
        with pytest.raises(InvalidClient):
            wrong.exchange_code_sync(op.authorize(redirect_uri=REDIRECT, scope="openid"))
        assert op.requests[-1].headers["authorization"].startswith("Basic ")
        with pytest.raises(ValueError, match="code_verifier"):
            auth.exchange_code_sync("code", code_verifier="too-short")
        with pytest.raises(ValueError, match="code"):
            auth.exchange_code_sync("")
    with pytest.raises(ConfigurationError, match="redirect_uri"):
        AuthorizationCodeAuth("c", "s", token_endpoint="https://op.example/token", redirect_uri="/relative")


def test_liberty_async_code_exchange() -> None:
    """exchange_code() is the async twin; the token then signs httpx.AsyncClient requests."""
    with LibertyFake() as op:
        auth = AuthorizationCodeAuth(op.client_id, op.client_secret, issuer=op.issuer, redirect_uri=REDIRECT)
        verifier, challenge = pkce_pair()
        code = op.authorize(redirect_uri=REDIRECT, scope="openid read", code_challenge=challenge)

        async def main() -> tuple[str, str]:
            token = await auth.exchange_code(code, code_verifier=verifier)
            return token.access_token, (await auth.get_token()).access_token

        exchanged, current = asyncio.run(main())
        assert exchanged == current in op.access


def test_liberty_answer_needs_pragma_no_cache(caplog: pytest.LogCaptureFixture) -> None:
    """RFC 6749 §5.1: without Pragma: no-cache the answer is refused under 'refuse' and warned about under 'warn'."""
    with LibertyFake() as op:
        op.send_pragma = False
        strict = AuthorizationCodeAuth(
            op.client_id, op.client_secret, token_endpoint=op.token_endpoint, redirect_uri=REDIRECT, no_store="refuse"
        )
        with pytest.raises(TokenEndpointError, match="Pragma: no-cache"):
            strict.exchange_code_sync(op.authorize(redirect_uri=REDIRECT, scope="openid"))
        lenient = AuthorizationCodeAuth(
            op.client_id, op.client_secret, token_endpoint=op.token_endpoint, redirect_uri=REDIRECT
        )
        with caplog.at_level(logging.WARNING, logger="tokenguard.client"):
            assert lenient.exchange_code_sync(op.authorize(redirect_uri=REDIRECT, scope="openid")).access_token
        assert "Pragma: no-cache" in caplog.text and "Cache-Control" not in caplog.text


# ---------------------------------------------------------------- Logto


def test_logto_opaque_tokens_carry_no_scope() -> None:
    """Logto's opaque tokens introspect to active + sub only: a scoped route refuses them, unscoped ones take them."""
    with LogtoFake() as tenant:
        opaque = ClientCredentialsAuth(
            tenant.client_id, tenant.client_secret, issuer=tenant.issuer, scope="read:books", no_store="refuse"
        ).get_token_sync()
        jwt_token = ClientCredentialsAuth(
            tenant.client_id, tenant.client_secret, issuer=tenant.issuer, scope="read:books",
            resource="https://api.example.com", no_store="refuse",
        ).get_token_sync()  # fmt: skip
        with logto(
            tenant.origin,
            resource="https://api.example.com",
            client_id=tenant.client_id,
            client_secret=tenant.client_secret,
        ) as guard:
            claims = guard.verify_sync(opaque.access_token)
            assert claims.subject == tenant.client_id and claims.scopes == frozenset()
            with pytest.raises(InsufficientScope):
                guard.require(claims, "read:books")
            scoped = guard.verify_sync(jwt_token.access_token)
            assert scoped.token_type == "jwt" and scoped.scopes == {"read:books"}
            guard.require(scoped, "read:books")
        introspection = [r for r in tenant.requests if r.path == "/oidc/token/introspection"]
        # The secret has "+ / : %" in it: RFC 6749 §2.3.1 form-encoding carried it intact.
        assert rfc6749_basic(introspection[-1].headers["authorization"]) == (tenant.client_id, tenant.client_secret)


class PlainBasicProvider(FakeServer):
    """A token endpoint that decodes HTTP Basic without RFC 6749 §2.3.1's form-decoding (as many do)."""

    def __init__(self) -> None:
        super().__init__()
        self.secret = "se+cr/et:%41"

    def handle(self, request: Recorded) -> Reply:
        if plain_basic(request.headers.get("authorization")) != ("svc", self.secret):
            return json_reply(401, {"error": "invalid_client"}, {"Cache-Control": "no-store", "Pragma": "no-cache"})
        answer = {"access_token": "at", "token_type": "Bearer", "expires_in": 60}
        return json_reply(200, answer, {"Cache-Control": "no-store", "Pragma": "no-cache"})


def test_basic_encoding_plain_for_providers_without_form_decoding() -> None:
    """The RFC default form-encodes the secret; basic_encoding='plain' suits providers that do not decode it."""
    with PlainBasicProvider() as provider:
        endpoint = provider.origin + "/token"
        with pytest.raises(InvalidClient):
            ClientCredentialsAuth("svc", provider.secret, token_endpoint=endpoint).get_token_sync()
        auth = ClientCredentialsAuth("svc", provider.secret, token_endpoint=endpoint, basic_encoding="plain")
        assert auth.get_token_sync().access_token == "at"
    with pytest.raises(ConfigurationError, match="basic_encoding"):
        ClientCredentialsAuth("svc", "s", token_endpoint=endpoint, basic_encoding="latin1")  # type: ignore[arg-type]


# ---------------------------------------------------------------- GrantID / IdentityServer


def test_grantid_body_credentials_and_authority_audience() -> None:
    """GrantID: introspection credentials in the body, JWT aud = the authority; both accepted when configured."""
    with GrantIDFake() as idp:
        with identity_server(
            idp.authority,
            api_name=idp.api_name,
            api_secret=idp.api_secret,
            auth_method="client_secret_post",
            audience=[idp.api_name, idp.authority],
        ) as guard:
            claims = guard.verify_sync(idp.jwt())
            assert claims.scopes == {"openid", "library-api-checked-books"}
            assert guard.verify_sync(idp.jwt(aud=idp.api_name)).subject == "alice"
            reference = idp.reference_token()
            introspected = guard.verify_sync(reference)
            assert introspected.token_type == "opaque" and introspected["amr"] == "pwd"
            guard.require(introspected, "library-api-checked-books")
            sent = [r for r in idp.requests if r.path == "/connect/introspect"][-1]
            assert "authorization" not in sent.headers
            assert sent.form == {
                "token": reference,
                "token_type_hint": "access_token",
                "client_id": idp.api_name,
                "client_secret": idp.api_secret,
            }
            with pytest.raises(InvalidToken, match="not active"):
                guard.verify_sync("0" * 64)
        with identity_server(idp.authority, api_name=idp.api_name, api_secret=idp.api_secret) as default:
            with pytest.raises(InvalidToken, match="audience"):
                default.verify_sync(idp.jwt())  # aud = the authority, not the API name
            with pytest.raises(TokenError):
                default.verify_sync(idp.reference_token())  # Basic auth: GrantID answers 401
            assert "authorization" in [r for r in idp.requests if r.path == "/connect/introspect"][-1].headers


# ---------------------------------------------------------------- DIAN


def _dian(server: DianFake, cls: Any = DianClient, **options: Any) -> Any:
    return cls(
        server.url,
        client_id="my-client",
        client_secret="client-secret",
        encryption_key=DIAN_KEY,
        tipo_documento="13",
        nro_documento="1234567890",
        nit="900123456",
        password="pw",
        **options,
    )


class EchoAPI(FakeServer):
    """A downstream API that records the Authorization header of every call."""

    def handle(self, request: Recorded) -> Reply:
        return json_reply(200, {"authorization": request.headers.get("authorization")})


def test_dian_async_auth_shares_one_login_among_20_tasks() -> None:
    """DianAuth on an AsyncDianClient: 20 concurrent tasks through httpx.AsyncClient cause one login, one token."""
    with DianFake() as server, EchoAPI() as api:
        auth = DianAuth(_dian(server, AsyncDianClient), revoke="both")

        async def main() -> list[str]:
            async with httpx.AsyncClient(auth=auth) as http:
                replies = await asyncio.gather(*(http.get(f"{api.origin}/invoices/{i}") for i in range(20)))
            await auth.aclose()
            return [reply.json()["authorization"] for reply in replies]

        headers = asyncio.run(main())
        assert headers == ["Bearer at-0"] * 20
        assert auth.logins == 1 and server.calls == ["login", "revoke", "revoke"]
        assert "at-0" in server.revoked and len(server.revoked) == 2  # the access token and the idToken


def test_dian_async_refresh_and_retry() -> None:
    """The async client refreshes near expiry, re-logs in when the refresh fails, and retries 429 (bounded)."""
    clock = Clock()

    async def no_wait(seconds: float) -> None:
        return None

    with DianFake(expire_in=600) as server:
        server.clock = clock
        auth = DianAuth(_dian(server, AsyncDianClient, clock=clock, sleep=no_wait), refresh_margin=60)

        async def main() -> list[str]:
            first = await auth.get_token()
            clock.now += 541
            second = await auth.get_token()
            server.refresh.clear()
            clock.now += 541
            server.fail_next = [(429, {}, b"{}")]
            third = await auth.get_token()
            await auth.aclose()
            return [first.access_token, second.access_token, third.access_token]

        assert asyncio.run(main()) == ["at-0", "at-1", "at-2"]
        # The 429 hit the second refresh, which was retried, then refused (401): a fresh login followed.
        assert server.calls == ["login", "refresh", "refresh", "refresh", "login", "revoke"]


def test_dian_auth_refuses_the_other_flavour() -> None:
    """A sync DianAuth never lets an AsyncClient send a request without credentials, and vice versa."""
    with DianFake() as server, EchoAPI() as api:
        sync_auth = DianAuth(_dian(server))

        async def main() -> None:
            async with httpx.AsyncClient(auth=sync_auth) as http:
                await http.get(api.origin)

        with pytest.raises(RuntimeError, match="AsyncDianClient"):
            asyncio.run(main())
        async_auth = DianAuth(_dian(server, AsyncDianClient))
        with httpx.Client(auth=async_auth) as http, pytest.raises(RuntimeError, match="AsyncClient"):
            http.get(api.origin)
        assert api.requests == [] and server.calls == []
    with pytest.raises(ConfigurationError, match="AsyncDianClient"):
        _dian(server, http_client=httpx.AsyncClient())
    with pytest.raises(ConfigurationError):
        DianAuth(object())  # type: ignore[arg-type]


@pytest.fixture
def every_record() -> Iterator[list[logging.LogRecord]]:
    """Every log record at every level, httpx's and httpcore's included, through the root logger."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    root = logging.getLogger()
    handler, level = Keep(level=logging.DEBUG), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _forms(value: str) -> set[str]:
    return {value, quote(value, safe=""), quote_plus(value)}


def test_no_dian_secret_reaches_any_log_record(every_record: list[logging.LogRecord]) -> None:
    """Login URLs carry the credentials; no record at any level holds one, plain, encrypted or URL-encoded."""
    with DianFake() as server:
        client = _dian(server, max_retries=1, sleep=lambda s: None)
        server.fail_next = [(503, {}, b"{}")]
        token = client.login()
        client.refresh(token)
        client.revoke(token, which="both")
        wrong = _dian(server)
        wrong._password = "wrong-password"
        with pytest.raises(DianError):
            wrong.login()

        async def main() -> None:
            async_client = _dian(server, AsyncDianClient)
            await async_client.login()
            await async_client.aclose()

        asyncio.run(main())
        # Another application's URL is not ours to edit.
        httpx.post(f"{server.url}/elsewhere?password=visible-elsewhere")
        client.close()
        wrong.close()
    secrets = {"client-secret", "pw", "wrong-password", "1234567890", "900123456"}
    for query in server.login_queries:
        secrets |= {query["client_secret"], query["password"]}
    secrets |= {token.access_token, token.refresh_token, token.id_token}
    messages = [record.getMessage() for record in every_record]
    assert any(r.name == "httpx" for r in every_record) and any(r.name.startswith("httpcore") for r in every_record)
    assert sum("tokens/login?" in m for m in messages) == 4
    for message in messages:
        for secret in secrets:
            for form in _forms(secret):
                assert f"={form}" not in message and f"{form}&" not in message, (secret, message)
        assert "client-secret" not in message and "wrong-password" not in message
    assert any("password=visible-elsewhere" in m for m in messages)


def test_dian_grant_parameter_and_json_content_type() -> None:
    """The grant parameter's name is an option ('grant_type' by default); every request says application/json."""
    with DianFake(grant_parameter="grant-type") as server:
        default = _dian(server)
        with pytest.raises(DianError) as refused:
            default.login()
        default.close()
        assert refused.value.status == 400
        client = _dian(server, grant_parameter="grant-type")
        token = client.login()
        assert server.login_queries[-1]["grant-type"] == "password" and "grant_type" not in server.login_queries[-1]
        client.refresh(token)
        assert {r.headers["content-type"] for r in server.requests} == {"application/json"}
        assert {r.body for r in server.requests} == {b""}
        client.close()
    with pytest.raises(ConfigurationError, match="grant_parameter"):
        _dian(server, grant_parameter="grant")


def test_dian_revocation_targets() -> None:
    """revoke() takes the access token by default, the idToken or both when asked."""
    with DianFake() as server:
        client = _dian(server)
        first = client.login()
        client.revoke(first, which="id_token")
        assert server.revoked == {first.id_token}
        second = client.login()
        client.revoke(second)
        assert server.revoked == {first.id_token, second.access_token}
        with pytest.raises(ValueError, match="which"):
            client.revoke(second, which="refresh_token")  # type: ignore[arg-type]
        sent = [r for r in server.requests if r.path.endswith("/revoke")]
        assert [r.headers["authorization"] for r in sent] == [f"Bearer {first.id_token}", "Bearer at-1"]
        assert {r.headers["clientid"] for r in sent} == {"my-client"}
        client.close()
    with pytest.raises(ConfigurationError, match="revoke"):
        DianAuth(_dian(server), revoke="refresh")  # type: ignore[arg-type]


def test_dian_short_id_token_secret_needs_the_opt_in(caplog: pytest.LogCaptureFixture) -> None:
    """A 16-byte DIAN-issued secret is refused by default and accepted, with a WARNING, when opted in."""
    with DianFake(id_secret=b"dian-issued-16by") as server:
        client = _dian(server)
        token = client.login()
        client.close()
    with pytest.raises(ConfigurationError, match="too short"):
        dian("my-client", b"dian-issued-16by")
    with pytest.raises(ConfigurationError, match="too short"):
        TokenGuard.from_keys(
            issuer="https://muisca.dian.gov.co", audience="my-client", hmac_keys={None: b"dian-issued-16by"},
            algorithms=["HS256"],
        )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="tokenguard.keys"):
        guard = dian("my-client", b"dian-issued-16by", allow_short_hmac_secret=True)
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning and "16-byte" in warning[0].getMessage()
    assert "dian-issued-16by" not in caplog.text
    with guard:
        assert guard.verify_sync(token.id_token).subject == "13|900123456|1234567890"
        with pytest.raises(InvalidToken):
            guard.verify_sync(server.id_token("someone-else"))
    with TokenGuard.from_keys(
        issuer="https://muisca.dian.gov.co", audience="my-client", hmac_keys={None: "dian-issued-16by"},
        allow_short_hmac_secret=True,
    ) as guard:  # fmt: skip
        assert guard.verify_sync(token.id_token).subject == "13|900123456|1234567890"


def test_dian_base_url_must_be_https() -> None:
    """Credentials travel over https; plain http only to a loopback address."""
    with pytest.raises(ConfigurationError, match="base_url"):
        DianClient(
            "http://api.dian.example", client_id="c", client_secret="s", encryption_key=DIAN_KEY,
            tipo_documento="13", nro_documento="1", nit="2", password="p",
        )  # fmt: skip
    DianClient(
        "http://127.0.0.1:9", client_id="c", client_secret="s", encryption_key=DIAN_KEY,
        tipo_documento="13", nro_documento="1", nit="2", password="p",
    ).close()  # fmt: skip


def test_dian_unreachable_is_a_dian_error_with_the_cause() -> None:
    """An unreachable service is a DianError (status 0) whose __cause__ is the transport error."""
    with DianFake() as server:
        url = server.url
    client = DianClient(
        url, client_id="c", client_secret="s", encryption_key=DIAN_KEY,
        tipo_documento="13", nro_documento="1", nit="2", password="p",
    )  # fmt: skip
    with pytest.raises(DianError) as info:
        client.login()
    assert info.value.status == 0 and isinstance(info.value.__cause__, httpx.TransportError)
    client.close()


@given(
    secret=st.text(min_size=6, max_size=40).filter(lambda s: s.strip() and "redacted" not in s),
    extra=st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=10), max_size=3),
)
def test_login_url_redaction_hides_every_credential_value(secret: str, extra: dict[str, str]) -> None:
    """Whatever the credentials hold, the redacted login URL keeps none of their encoded values."""
    from tokenguard.client.dian import _REDACTOR

    base = "https://dian.redaction.test/identidad/sts/v1/tokens/login"
    _REDACTOR.register(base)
    params = {**extra, "grant_type": "password", "client_id": "c", "client_secret": secret, "password": secret}
    url = httpx.URL(base, params=params)
    redacted = str(_REDACTOR.redact(url, frozenset({"grant_type"})))
    assert redacted.startswith(base + "?") and "client_secret=[redacted]" in redacted
    encoded = str(httpx.URL("https://x/", params={"v": secret})).split("v=", 1)[1]
    assert f"={encoded}" not in redacted and f"={secret}&" not in redacted
    other = httpx.URL("https://elsewhere.test/login", params=params)
    assert _REDACTOR.redact(other, frozenset()) is other  # not one of our login URLs: untouched


def test_logto_page_setups_through_fastapi() -> None:
    """The Logto page's two setups, served for real: scoped routes take JWTs, unscoped ones take opaque tokens."""
    from fastapi import FastAPI, Security

    from tokenguard import TokenClaims
    from tokenguard.fastapi import setup

    with LogtoFake() as tenant:
        guard = logto(
            tenant.origin,
            resource="https://api.example.com",
            client_id=tenant.client_id,
            client_secret=tenant.client_secret,
        )
        app = FastAPI()
        setup(app, guard, middleware=True)

        @app.get("/books")
        async def books(claims: TokenClaims = Security(guard.requires("read:books"))) -> dict[str, Any]:
            return {"user": claims.subject}

        @app.get("/me")
        async def me(claims: TokenClaims = Security(guard.requires())) -> dict[str, Any]:
            return {"user": claims.subject}

        opaque = ClientCredentialsAuth(tenant.client_id, tenant.client_secret, issuer=tenant.issuer)
        scoped = ClientCredentialsAuth(
            tenant.client_id,
            tenant.client_secret,
            issuer=tenant.issuer,
            scope="read:books",
            resource="https://api.example.com",
        )
        with guard, UvicornServer(app) as api:
            with httpx.Client(auth=opaque) as http:
                refused = http.get(f"{api.url}/books")
                assert (
                    refused.status_code == 403 and 'error="insufficient_scope"' in refused.headers["www-authenticate"]
                )
                assert http.get(f"{api.url}/me").json() == {"user": tenant.client_id}
            with httpx.Client(auth=scoped) as http:
                assert http.get(f"{api.url}/books").json() == {"user": tenant.client_id}


DOCS = sorted((Path(__file__).resolve().parent.parent / "docs").glob("providers/*.md")) + [
    Path(__file__).resolve().parent.parent / "docs" / name for name in ("providers.md", "client.md")
]


@pytest.mark.parametrize("page", DOCS, ids=[p.name for p in DOCS])
def test_doc_examples_compile_and_import(page: Path) -> None:
    """Every Python example on the provider and client pages compiles and imports names that exist."""
    import ast
    import importlib
    import re

    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    assert blocks, f"{page.name} has no Python example"
    for block in blocks:
        tree = ast.parse(block)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tokenguard"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{page.name}: {node.module}.{alias.name}"


def test_no_oauth_secret_reaches_any_log_record(every_record: list[logging.LogRecord]) -> None:
    """The code exchange, refresh, introspection and revocation log nothing secret at any level."""
    clock = Clock()
    with LibertyFake(client_secret="rp-secret-value") as op:
        auth = AuthorizationCodeAuth(
            op.client_id, op.client_secret, issuer=op.issuer, redirect_uri=REDIRECT, clock=clock
        )
        verifier, challenge = pkce_pair()
        code = op.authorize(redirect_uri=REDIRECT, scope="openid read", code_challenge=challenge)
        first = auth.exchange_code_sync(code, code_verifier=verifier)
        clock.now += op.expires_in
        second = auth.get_token_sync()
        with ibm_liberty(
            op.origin, "OP", audience=None, client_id=op.client_id, client_secret=op.client_secret
        ) as guard:
            assert guard.verify_sync(second.access_token).subject == "alice"
        auth.close()
    secrets = {op.client_secret, code, verifier}
    for token in (first, second):
        secrets |= {token.access_token, token.refresh_token or "", token.id_token or ""}
    secrets.discard("")
    messages = [f"{record.getMessage()} {record.args!r}" for record in every_record]
    assert any("/token" in m for m in messages)  # httpx's request lines were captured
    for message in messages:
        for secret in secrets:
            assert secret not in message and quote_plus(secret) not in message, message


def test_redaction_matches_the_url_as_httpx_prints_it() -> None:
    """A base URL written with an upper-case host or the default port still has its login URL redacted."""
    from tokenguard.client.dian import _REDACTOR

    client = DianClient(
        "https://API.Dian-Redaction.example:443/", client_id="c", client_secret="s", encryption_key=DIAN_KEY,
        tipo_documento="13", nro_documento="1", nit="2", password="p",
    )  # fmt: skip
    request = httpx.Request("POST", client._login_request().url, params={"client_secret": "hidden-value"})
    assert str(request.url).startswith("https://api.dian-redaction.example/identidad")
    assert "hidden-value" not in str(_REDACTOR.redact(request.url, frozenset()))
    client.close()


class _NonRotatingLiberty(LibertyFake):
    """A provider that does not rotate refresh tokens: refresh answers carry no ``refresh_token`` (RFC 6749 §6)."""

    def _token(self, form: dict[str, str]) -> Reply:
        kept = self.refresh.get(form.get("refresh_token", "")) if form.get("grant_type") == "refresh_token" else None
        status, headers, body = super()._token(form)
        if kept is None:
            return status, headers, body
        self.refresh[form["refresh_token"]] = kept  # still valid: it was not replaced
        answer = json.loads(body)
        del answer["refresh_token"], answer["id_token"]
        return json_reply(status, answer, headers)


def test_refresh_without_a_new_refresh_token_keeps_the_old_one() -> None:
    """RFC 6749 §6: when a refresh answer issues no new refresh token, the client keeps using the one it has."""
    clock = Clock()
    with _NonRotatingLiberty() as op:
        auth = AuthorizationCodeAuth(
            op.client_id, op.client_secret, issuer=op.issuer, redirect_uri=REDIRECT, clock=clock
        )
        first = auth.exchange_code_sync(op.authorize(redirect_uri=REDIRECT, scope="openid"))
        for _ in range(3):
            clock.now += op.expires_in
            refreshed = auth.get_token_sync()
            assert refreshed.refresh_token == first.refresh_token
            assert refreshed.id_token == first.id_token  # the ID token the exchange gave is not forgotten
        grants = [r.form.get("grant_type") for r in op.requests if r.path.endswith("/token")]
        assert grants == ["authorization_code", "refresh_token", "refresh_token", "refresh_token"]

        async def main() -> None:
            clock.now += op.expires_in
            assert (await auth.get_token()).refresh_token == first.refresh_token

        asyncio.run(main())


def test_https_errors_name_the_option_each_client_takes() -> None:
    """The https refusal names the keyword that turns it off for *this* class, and that keyword works."""
    dian_options: dict[str, Any] = {
        "client_id": "c", "client_secret": "s", "encryption_key": DIAN_KEY,
        "tipo_documento": "13", "nro_documento": "1", "nit": "2", "password": "p",
    }  # fmt: skip
    builders: list[Any] = [
        lambda **o: ClientCredentialsAuth("c", "s", token_endpoint="http://op.example/token", **o),
        lambda **o: ClientCredentialsAuth("c", "s", issuer="http://op.example", **o),
        lambda **o: AuthorizationCodeAuth(
            "c",
            "s",
            token_endpoint="https://op.example/t",
            revocation_endpoint="http://op.example/r",
            redirect_uri=REDIRECT,
            **o,
        ),  # fmt: skip
        lambda **o: DianClient("http://api.dian.example", **dian_options, **o),
        lambda **o: AsyncDianClient("http://api.dian.example", **dian_options, **o),
    ]
    for build in builders:
        with pytest.raises(ConfigurationError) as refused:
            build()
        assert "pass require_https=False only" in str(refused.value)
        assert "fetch=" not in str(refused.value)  # the guard's spelling: a TypeError here
        build(require_https=False)


def test_plain_basic_refuses_a_client_id_with_a_colon() -> None:
    """Plain Basic cannot carry "a:b" as the user-id (RFC 7617 §2): refused at construction, naming the way out."""
    with pytest.raises(ConfigurationError, match='basic_encoding="rfc6749"'):
        ClientCredentialsAuth("tenant:svc", "s", token_endpoint="https://op.example/t", basic_encoding="plain")
    # The RFC 6749 default form-encodes the colon; the body carries it as is.
    ClientCredentialsAuth("tenant:svc", "s", token_endpoint="https://op.example/t")
    post: dict[str, Any] = {"basic_encoding": "plain", "auth_method": "client_secret_post"}
    ClientCredentialsAuth("tenant:svc", "s", token_endpoint="https://op.example/t", **post)


@pytest.mark.parametrize("max_backoff", [-1.0, float("nan"), float("inf"), "30", True])
def test_dian_max_backoff_is_validated(max_backoff: Any) -> None:
    """A negative, NaN or non-number max_backoff is refused at construction, not on the first 429 (time.sleep)."""
    for cls in (DianClient, AsyncDianClient):
        with pytest.raises(ConfigurationError, match="max_backoff"):
            cls(
                "https://api.dian.example", client_id="c", client_secret="s", encryption_key=DIAN_KEY,
                tipo_documento="13", nro_documento="1", nit="2", password="p", max_backoff=max_backoff,
            )  # fmt: skip


@pytest.mark.parametrize("expire_in", [float("nan"), float("inf")])
def test_dian_answer_with_a_non_finite_expiry_is_refused(expire_in: float) -> None:
    """expireIn NaN would make every request log in again, inf would never refresh: not a DToken."""
    with DianFake(expire_in=expire_in) as server:  # type: ignore[arg-type]
        client = _dian(server)
        with pytest.raises(DianError, match="not a DToken"):
            client.login()
        client.close()


def test_dian_short_expiry_is_reused_for_half_its_life() -> None:
    """An expireIn of 40 s under the 60 s refresh margin: one login serves many requests, not one each."""
    with DianFake(expire_in=40) as server:
        auth = DianAuth(_dian(server))
        first = auth.get_token_sync()
        assert all(auth.get_token_sync() is first for _ in range(5))
        assert auth.logins == 1 and server.calls == ["login"]
        auth.close()
