"""FastAPI, natively: overridable requirements, SecurityScopes, websockets, OpenAPI, OAuth2, typed claims.

Through a real uvicorn (and FastAPI's own TestClient where it is the natural tool)
with the plugin's loopback issuer.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import pydantic
import pytest
from fastapi import Depends, FastAPI, Security, WebSocket
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tokenguard import ConfigurationError, TokenClaims, TokenGuard, parse_challenges
from tokenguard.fastapi import OAuth2Settings, setup
from tokenguard.pytest_plugin import TokenFactory
from tokenguard.testing import LocalIssuer

from .asgi_support import GuardedServer, closing_guard

pytestmark = [
    pytest.mark.integration,
    # FastAPI's TestClient (starlette's) warns that it will move to another HTTP library.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:fastapi.testclient"),
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`"),
]


class AppClaims(pydantic.BaseModel):
    """What the example app expects of every token."""

    model_config = pydantic.ConfigDict(frozen=True)
    sub: str
    tenant: str
    client_id: str


@dataclasses.dataclass(frozen=True)
class TenantClaims:
    tenant: str


#: A typed-claims dependency type, as an application declares it (set by build_app).
Reader: Any = None


def build_app(guard: TokenGuard, **options: Any) -> FastAPI:
    app = FastAPI()
    setup(app, guard, **options)

    @app.get("/read")
    async def read(claims: TokenClaims = Security(guard.requires("read"))) -> dict[str, Any]:
        return {"sub": claims.subject}

    @app.get("/admin")
    async def admin(claims: TokenClaims = Security(guard.requires(), scopes=["admin"])) -> dict[str, Any]:
        return {"sub": claims.subject}

    async def reader(claims: TokenClaims = Security(guard.requires("read"))) -> TokenClaims:
        return claims

    async def middle(claims: TokenClaims = Depends(reader)) -> TokenClaims:
        return claims

    @app.get("/nested")
    async def nested(claims: TokenClaims = Security(middle, scopes=["admin"])) -> dict[str, Any]:
        return {"sub": claims.subject}

    @app.get("/either")
    async def either(
        claims: TokenClaims = Security(guard.requires("a", "b", any_of=True), scopes=["admin"]),
    ) -> dict[str, Any]:
        return {"ok": True}

    @app.get("/typed")
    async def typed(claims: AppClaims = Security(guard.requires("read").model(AppClaims))) -> dict[str, Any]:
        return {"tenant": claims.tenant, "sub": claims.sub}

    # Applications declare such aliases at module level; with postponed annotations
    # FastAPI resolves the name in the module's globals.
    global Reader
    Reader = Annotated[AppClaims, Security(guard.requires("read").model(AppClaims))]

    @app.get("/annotated")
    async def annotated(claims: Reader) -> dict[str, Any]:
        return {"tenant": claims.tenant}

    @app.get("/tenant")
    async def tenant(claims: TenantClaims = Security(guard.requires().model(TenantClaims))) -> dict[str, Any]:
        return {"tenant": claims.tenant}

    @app.get("/declared", responses={401: {"description": "the app's own words"}})
    async def declared(claims: TokenClaims = Security(guard.requires())) -> dict[str, Any]:
        return {}

    @app.get("/public")
    async def public() -> dict[str, Any]:
        return {}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, claims: TokenClaims = Security(guard.requires("read"))) -> None:
        await websocket.accept()
        await websocket.send_json({"sub": claims.subject})
        await websocket.close()

    @app.websocket("/ws-typed")
    async def ws_typed(websocket: WebSocket, claims: AppClaims = Security(guard.requires().model(AppClaims))) -> None:
        await websocket.accept()
        await websocket.send_json({"tenant": claims.tenant})
        await websocket.close()

    return app


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---------------------------------------------------------------- requirements as values


def test_requirements_compare_equal_and_hash_alike(tokenguard_guard: Callable[..., TokenGuard]) -> None:
    """Same arguments on the same guard: equal and same hash; anything else differs."""
    guard, other = tokenguard_guard(), tokenguard_guard()
    assert guard.requires("read") == guard.requires("read")
    assert hash(guard.requires("read", "write")) == hash(guard.requires("read", "write"))
    assert guard.requires("read") != guard.requires("write")
    assert guard.requires("a", "b") != guard.requires("a", "b", any_of=True)
    assert guard.requires("read") != other.requires("read")
    assert guard.requires("read").model(AppClaims) == guard.requires("read").model(AppClaims)
    assert guard.requires("read").model(AppClaims) != guard.requires("read").model(TenantClaims)
    assert len({guard.requires("read"), guard.requires("read")}) == 1


def test_dependency_overrides_replace_the_requirement(tokenguard_guard: Callable[..., TokenGuard]) -> None:
    """An override keyed by a new ``guard.requires(...)`` call applies, to typed routes too."""
    guard = tokenguard_guard()
    app = build_app(guard)
    fake = TokenClaims({"sub": "tester", "tenant": "t1", "client_id": "c"}, token_type="custom")
    app.dependency_overrides[guard.requires("read")] = lambda: fake
    with GuardedServer(app, guard) as server:
        assert httpx.get(f"{server.url}/read").json() == {"sub": "tester"}
        assert httpx.get(f"{server.url}/typed").json() == {"tenant": "t1", "sub": "tester"}
        # Routes with other requirements are untouched.
        assert httpx.get(f"{server.url}/admin").status_code == 401


def test_middleware_answers_before_overrides(
    tokenguard_guard: Callable[..., TokenGuard], tokenguard_token: TokenFactory
) -> None:
    """As documented: with middleware=True an override cannot skip the token check; send a real token."""
    guard = tokenguard_guard()
    app = build_app(guard, middleware=True)
    app.dependency_overrides[guard.requires("read")] = lambda: TokenClaims({"sub": "x"}, token_type="custom")
    with GuardedServer(app, guard) as server:
        assert httpx.get(f"{server.url}/read").status_code == 401
        assert httpx.get(f"{server.url}/read", headers=auth(tokenguard_token("nothing"))).json() == {"sub": "x"}


# ---------------------------------------------------------------- SecurityScopes


@pytest.mark.parametrize(
    ("path", "scope", "status", "needed"),
    [
        ("/admin", "read", 403, ("admin",)),
        ("/admin", "admin", 200, None),
        ("/nested", "read", 403, ("read", "admin")),
        ("/nested", "admin", 403, ("read", "admin")),
        ("/nested", "read admin", 200, None),
        ("/either", "a", 403, ("admin",)),
        ("/either", "b admin", 200, None),
        ("/either", "admin", 403, ("a", "b")),
    ],
)
def test_security_scopes_are_enforced_at_any_level(
    tokenguard_guard: Callable[..., TokenGuard],
    tokenguard_token: TokenFactory,
    path: str,
    scope: str,
    status: int,
    needed: tuple[str, ...] | None,
) -> None:
    """Scopes given to ``Security(..., scopes=...)``, directly or through nested dependencies, are required."""
    guard = tokenguard_guard()
    with GuardedServer(build_app(guard), guard) as server:
        response = httpx.get(f"{server.url}{path}", headers=auth(tokenguard_token(scope)))
        assert response.status_code == status, response.text
        if needed is not None:
            found = parse_challenges(response.headers["www-authenticate"])[0]
            assert found.error == "insufficient_scope" and found.scope == needed


# ---------------------------------------------------------------- websockets


def test_websocket_route_with_security(
    tokenguard_guard: Callable[..., TokenGuard], tokenguard_token: TokenFactory
) -> None:
    """``Security(guard.requires())`` on a websocket route: claims for the connection, 1008 on refusal."""
    guard = tokenguard_guard()
    with GuardedServer(build_app(guard), guard) as server:
        url = server.url.replace("http", "ws") + "/ws"
        with connect(url, additional_headers=auth(tokenguard_token("read"))) as ws:
            assert ws.recv() == '{"sub":"user-1"}'
        for headers in ({}, auth(tokenguard_token("other")), auth("bad.token.here")):
            with pytest.raises(InvalidStatus) as refused:
                connect(url, additional_headers=headers)
            assert refused.value.response.status_code == 403


def test_websocket_close_code_is_1008(
    tokenguard_guard: Callable[..., TokenGuard], tokenguard_token: TokenFactory
) -> None:
    """Through FastAPI's TestClient, the refusal is a close with code 1008 and the RFC 6750 error as reason."""
    from fastapi.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    guard = tokenguard_guard()
    with TestClient(closing_guard(build_app(guard), guard)) as client:
        with client.websocket_connect("/ws", headers=auth(tokenguard_token("read"))) as ws:
            assert ws.receive_json() == {"sub": "user-1"}
        with pytest.raises(WebSocketDisconnect) as closed:
            with client.websocket_connect("/ws", headers=auth(tokenguard_token("other"))):
                pass
        assert closed.value.code == 1008 and closed.value.reason == "insufficient_scope"
        with pytest.raises(WebSocketDisconnect) as missing:
            with client.websocket_connect("/ws"):
                pass
        assert missing.value.code == 1008
        with pytest.raises(WebSocketDisconnect) as untyped:
            with client.websocket_connect("/ws-typed", headers=auth(tokenguard_token("read"))):
                pass
        assert untyped.value.code == 1008 and untyped.value.reason == "invalid_token"
        typed = tokenguard_token("read", extra_claims={"tenant": "t1"})
        with client.websocket_connect("/ws-typed", headers=auth(typed)) as ws:
            assert ws.receive_json() == {"tenant": "t1"}


# ---------------------------------------------------------------- OpenAPI


def test_openapi_lists_scopes_and_error_responses(tokenguard_guard: Callable[..., TokenGuard]) -> None:
    """Each operation lists its scopes; 400/401/403/503 are documented with the error body; app wording kept."""
    guard = tokenguard_guard()
    with GuardedServer(build_app(guard), guard) as server:
        schema = httpx.get(f"{server.url}/openapi.json").json()
    paths = schema["paths"]
    assert paths["/read"]["get"]["security"] == [{"BearerToken": ["read"]}]
    assert paths["/admin"]["get"]["security"] == [{"BearerToken": ["admin"]}]
    assert sorted(paths["/nested"]["get"]["security"][0]["BearerToken"]) == ["admin", "read"]
    responses = paths["/read"]["get"]["responses"]
    for status in ("400", "401", "403", "503"):
        assert responses[status]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/TokenError"}
    assert "WWW-Authenticate" in responses["401"]["headers"] and "Retry-After" in responses["503"]["headers"]
    assert "403" not in paths["/declared"]["get"]["responses"]  # no scopes: no 403
    assert paths["/declared"]["get"]["responses"]["401"] == {"description": "the app's own words"}
    assert "security" not in paths["/public"]["get"] and "401" not in paths["/public"]["get"]["responses"]
    assert schema["components"]["schemas"]["TokenError"]["required"] == ["error"]


def test_oauth2_scheme_obtains_a_real_token(
    tokenguard_guard: Callable[..., TokenGuard], tokenguard_issuer: LocalIssuer
) -> None:
    """With OAuth2Settings from the issuer's metadata, the documented token URL yields a token the API accepts."""
    settings = OAuth2Settings.from_issuer(tokenguard_issuer.issuer, scopes={"read": "Read books"}, client_id="docs")
    guard = tokenguard_guard()
    with GuardedServer(build_app(guard, oauth2=settings), guard) as server:
        schema = httpx.get(f"{server.url}/openapi.json").json()
        scheme = schema["components"]["securitySchemes"]["OAuth2"]
        assert scheme == {
            "type": "oauth2",
            "flows": {
                "clientCredentials": {"tokenUrl": tokenguard_issuer.token_endpoint, "scopes": {"read": "Read books"}}
            },
        }
        assert schema["paths"]["/read"]["get"]["security"] == [{"BearerToken": ["read"]}, {"OAuth2": ["read"]}]
        docs = httpx.get(f"{server.url}/docs").text
        assert '"usePkceWithAuthorizationCodeGrant": true' in docs and '"clientId": "docs"' in docs
        # What Swagger UI's Authorize does for client credentials.
        token_url = scheme["flows"]["clientCredentials"]["tokenUrl"]
        answer = httpx.post(
            token_url,
            data={
                "grant_type": "client_credentials",
                "scope": "read",
                "client_id": tokenguard_issuer.client_id,
                "client_secret": tokenguard_issuer.client_secret,
            },
        ).json()
        response = httpx.get(f"{server.url}/read", headers=auth(answer["access_token"]))
        assert response.status_code == 200


def test_oauth2_settings_from_a_real_openid_provider(oidc_provider: Any) -> None:
    """Against oidc-provider: authorization code with PKCE is offered at its authorization endpoint."""
    settings = OAuth2Settings.from_issuer(oidc_provider.issuer, scopes=["openid"])
    flows = settings.security_scheme()["flows"]
    assert flows["authorizationCode"]["authorizationUrl"].startswith(oidc_provider.issuer)
    assert flows["authorizationCode"]["tokenUrl"].startswith(oidc_provider.issuer)
    assert flows["authorizationCode"]["scopes"] == {"openid": "openid"}


def test_oauth2_settings_refuse_bad_input(tokenguard_issuer: LocalIssuer) -> None:
    """Missing token endpoint, a foreign issuer, a bare string of scopes, no flow: ConfigurationError."""
    with pytest.raises(ConfigurationError, match="token_endpoint"):
        OAuth2Settings.from_metadata({"issuer": "https://i.test"})
    with pytest.raises(ConfigurationError, match="scopes"):
        OAuth2Settings.from_metadata({"token_endpoint": "https://i.test/token"}, scopes="read write")
    with pytest.raises(ConfigurationError, match="does not name the issuer"):
        OAuth2Settings.from_issuer(tokenguard_issuer.issuer + "/")
    with pytest.raises(ConfigurationError, match="cannot read"):
        OAuth2Settings.from_issuer(tokenguard_issuer.issuer + "/missing")
    with pytest.raises(ConfigurationError, match="no flow"):
        OAuth2Settings(token_url="https://i.test/token", client_credentials=False)
    with pytest.raises(ConfigurationError, match="token_url"):
        OAuth2Settings(token_url="/token")
    # No S256 in the metadata: no authorization code flow (PKCE is not optional for it here).
    plain = OAuth2Settings.from_metadata(
        {
            "token_endpoint": "https://i.test/token",
            "authorization_endpoint": "https://i.test/auth",
            "code_challenge_methods_supported": ["plain"],
        }
    )
    assert plain.authorization_url is None and plain.client_credentials


# ---------------------------------------------------------------- typed claims through FastAPI


def test_typed_claims_dependency(
    tokenguard_guard: Callable[..., TokenGuard], tokenguard_token: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A model is the dependency's value; claims that do not fit are 401 invalid_token, logged without values."""
    guard = tokenguard_guard()
    with GuardedServer(build_app(guard), guard) as server:
        good = tokenguard_token("read", extra_claims={"tenant": "acme"})
        assert httpx.get(f"{server.url}/typed", headers=auth(good)).json() == {"tenant": "acme", "sub": "user-1"}
        assert httpx.get(f"{server.url}/tenant", headers=auth(good)).json() == {"tenant": "acme"}
        assert httpx.get(f"{server.url}/annotated", headers=auth(good)).json() == {"tenant": "acme"}
        assert httpx.get(f"{server.url}/annotated").status_code == 401
        secret_value = "do-not-log-this-value"
        caplog.set_level(logging.WARNING, "tokenguard.typed_claims")
        unfit = tokenguard_token("read", extra_claims={"tenant": [secret_value], "note": secret_value})
        response = httpx.get(f"{server.url}/typed", headers=auth(unfit))
        assert response.status_code == 401
        assert parse_challenges(response.headers["www-authenticate"])[0].error == "invalid_token"
        assert "tenant" in caplog.text and secret_value not in caplog.text and secret_value not in response.text
        weak = httpx.get(f"{server.url}/typed", headers=auth(tokenguard_token("other", extra_claims={"tenant": "a"})))
        assert weak.status_code == 403


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_urls = st.sampled_from(["https://i.test/token", "http://127.0.0.1:1/t", "/relative", "", "javascript:x"])


@settings(max_examples=300)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "token_endpoint": _urls | _json,
            "authorization_endpoint": _urls | _json,
            "grant_types_supported": _json,
            "code_challenge_methods_supported": _json,
            "scopes_supported": _json,
        },
    )
)
def test_oauth2_settings_from_any_metadata(metadata: dict[str, Any]) -> None:
    """Property: any metadata document gives valid settings (an offered flow, absolute URLs) or ConfigurationError."""
    try:
        found = OAuth2Settings.from_metadata(metadata)
    except ConfigurationError:
        return
    scheme = found.security_scheme()
    assert scheme["flows"], "settings always offer a flow"
    for flow in scheme["flows"].values():
        assert flow["tokenUrl"].startswith(("https://", "http://"))
        assert all(isinstance(name, str) for name in flow["scopes"])
    if "authorizationCode" in scheme["flows"]:
        methods = metadata.get("code_challenge_methods_supported")
        assert not isinstance(methods, list) or "S256" in methods


def test_document_security_is_idempotent() -> None:
    """Applying the OpenAPI additions twice changes nothing more, and operations do not share response objects."""
    from tokenguard.fastapi import document_security

    settings_ = OAuth2Settings(token_url="https://i.test/token")
    schema: dict[str, Any] = {
        "paths": {
            "/a": {"get": {"security": [{"BearerToken": ["read"]}], "responses": {}}},
            "/b": {"get": {"security": [{"BearerToken": ["read"]}], "responses": {}}},
        }
    }
    once = document_security(schema, settings_)
    import copy

    snapshot = copy.deepcopy(once)
    assert document_security(once, settings_) == snapshot
    assert snapshot["paths"]["/a"]["get"]["security"] == [{"BearerToken": ["read"]}, {"OAuth2": ["read"]}]
    a, b = once["paths"]["/a"]["get"]["responses"]["401"], once["paths"]["/b"]["get"]["responses"]["401"]
    assert a == b and a is not b
