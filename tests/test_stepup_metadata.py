"""Step-up (RFC 9470), per-route DPoP modes and RFC 9728 metadata through FastAPI under uvicorn."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Security

from tokenguard import ConfigurationError, TokenClaims, TokenGuard, parse_challenges
from tokenguard.fastapi import setup
from tokenguard.testing import LocalIssuer

from .conftest import UvicornServer

pytestmark = pytest.mark.integration

RESOURCE = "https://api.test/v1"
METADATA = "https://api.test/.well-known/oauth-protected-resource/v1"


def app_for(guard: TokenGuard) -> FastAPI:
    app = FastAPI()
    setup(app, guard, middleware=True)

    @app.get("/books")
    async def books(claims: TokenClaims = Security(guard.requires("read"))) -> dict[str, Any]:
        return {"sub": claims.subject}

    @app.get("/transfer")
    async def transfer(
        claims: TokenClaims = Security(guard.requires("write", acr_values=["urn:mfa", "urn:hwk"], max_age=300)),
    ) -> dict[str, Any]:
        return {"ok": True}

    @app.get("/dpop-only")
    async def dpop_only(claims: TokenClaims = Security(guard.requires("read", dpop="required"))) -> dict[str, Any]:
        return {"ok": True}

    return app


@pytest.fixture
def served(shared_issuer: LocalIssuer) -> Iterator[tuple[str, LocalIssuer]]:
    # No idle pooled connection may outlive the uvicorn thread's event loop.
    client = httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0))
    guard = shared_issuer.guard(introspection=False, resource=RESOURCE, dpop="allowed", async_http_client=client)
    with UvicornServer(app_for(guard)) as server:
        yield server.url, shared_issuer


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_step_up_satisfied(served: tuple[str, LocalIssuer]) -> None:
    """A token with an accepted acr and a recent auth_time passes."""
    url, issuer = served
    token = issuer.issue(scope="write", extra_claims={"acr": "urn:mfa", "auth_time": int(time.time()) - 10})
    assert httpx.get(f"{url}/transfer", headers=bearer(token)).status_code == 200


@pytest.mark.parametrize(
    "claims",
    [
        {"acr": "urn:pwd", "auth_time": "recent"},
        {"acr": "urn:mfa", "auth_time": "old"},
        {"acr": "urn:mfa"},
        {"auth_time": "recent"},
    ],
)
def test_step_up_required(served: tuple[str, LocalIssuer], claims: dict[str, Any]) -> None:
    """Wrong acr, old or missing auth_time: 401 insufficient_user_authentication with acr_values and max_age."""
    url, issuer = served
    now = int(time.time())
    if "auth_time" in claims:
        claims["auth_time"] = now - 10 if claims["auth_time"] == "recent" else now - 3600
    token = issuer.issue(scope="write", extra_claims=claims)
    response = httpx.get(f"{url}/transfer", headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["error"] == "insufficient_user_authentication"
    challenges = {c.scheme: c for c in parse_challenges(response.headers["www-authenticate"])}
    bearer_challenge = challenges["Bearer"]
    assert bearer_challenge.error == "insufficient_user_authentication"
    params = dict(bearer_challenge.extra)
    assert params["acr_values"] == "urn:mfa urn:hwk"
    assert params["max_age"] == "300"
    assert params["resource_metadata"] == METADATA
    assert challenges["DPoP"].error is None
    assert response.headers["cache-control"] == "no-store"


def test_scope_checked_before_step_up(served: tuple[str, LocalIssuer]) -> None:
    """Without the scope, 403 insufficient_scope (with resource_metadata) comes first."""
    url, issuer = served
    response = httpx.get(f"{url}/transfer", headers=bearer(issuer.issue(scope="read", extra_claims={"acr": "urn:mfa"})))
    assert response.status_code == 403
    challenge = parse_challenges(response.headers["www-authenticate"])[0]
    assert challenge.scope == ("write",)
    assert dict(challenge.extra)["resource_metadata"] == METADATA


def test_route_requiring_dpop_refuses_bearer(served: tuple[str, LocalIssuer]) -> None:
    """dpop="required" on a route: a Bearer token is invalid_token on the DPoP challenge."""
    url, issuer = served
    response = httpx.get(f"{url}/dpop-only", headers=bearer(issuer.issue(scope="read")))
    assert response.status_code == 401
    challenges = {c.scheme: c for c in parse_challenges(response.headers["www-authenticate"])}
    assert challenges["DPoP"].error == "invalid_token"
    assert httpx.get(f"{url}/books", headers=bearer(issuer.issue(scope="read"))).status_code == 200


def test_metadata_lists_route_scopes(served: tuple[str, LocalIssuer]) -> None:
    """The RFC 9728 document: scopes from the routes' requirements, DPoP algorithms, public and cacheable."""
    url, issuer = served
    response = httpx.get(f"{url}/.well-known/oauth-protected-resource/v1")
    assert response.status_code == 200
    document = response.json()
    assert document["resource"] == RESOURCE
    assert document["authorization_servers"] == [issuer.issuer]
    assert document["scopes_supported"] == ["read", "write"]
    assert "ES256" in document["dpop_signing_alg_values_supported"]
    assert document["dpop_bound_access_tokens_required"] is False
    assert "max-age" in response.headers["cache-control"]
    assert httpx.post(f"{url}/.well-known/oauth-protected-resource/v1").status_code == 401


def test_configuration_errors(shared_issuer: LocalIssuer) -> None:
    """A route DPoP mode without DPoP on the guard, or a bare acr string, is refused at construction."""
    guard = shared_issuer.guard(introspection=False)
    with pytest.raises(ConfigurationError, match="needs DPoP enabled"):
        guard.requires("read", dpop="required")
    with pytest.raises(ConfigurationError, match="not a string"):
        guard.requires("read", acr_values="urn:mfa")
    with pytest.raises(ConfigurationError, match="dpop must be"):
        shared_issuer.guard(introspection=False, dpop=5)
    with pytest.raises(ConfigurationError, match="resource"):
        shared_issuer.guard(introspection=False, resource="not a url")


@pytest.mark.parametrize("stack", ["flask", "starlette"])
def test_step_up_through_decorators(shared_issuer: LocalIssuer, stack: str) -> None:
    """Flask's tg.requires and Starlette's requires take acr_values/max_age too; Flask serves RFC 9728."""
    from flask import Flask, jsonify
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tokenguard.flask import FlaskTokenGuard
    from tokenguard.starlette import TokenGuardMiddleware, requires

    from .conftest import WSGIServer

    client = httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0))
    guard = shared_issuer.guard(introspection=False, resource=RESOURCE, async_http_client=client)
    server: UvicornServer | WSGIServer
    if stack == "flask":
        app = Flask(__name__)
        tg = FlaskTokenGuard(app, guard)

        @app.get("/transfer")
        @tg.requires("write", acr_values=["urn:mfa"], max_age=300)
        def transfer() -> Any:
            return jsonify({"ok": True})

        server = WSGIServer(app)
    else:

        @requires(guard, "write", acr_values=["urn:mfa"], max_age=300)
        async def transfer_endpoint(request: Request) -> JSONResponse:
            return JSONResponse({"ok": True})

        server = UvicornServer(TokenGuardMiddleware(Starlette(routes=[Route("/transfer", transfer_endpoint)]), guard))
    now = int(time.time())
    with server:
        good = shared_issuer.issue(scope="write", extra_claims={"acr": "urn:mfa", "auth_time": now})
        assert httpx.get(f"{server.url}/transfer", headers=bearer(good)).status_code == 200
        weak = shared_issuer.issue(scope="write", extra_claims={"acr": "urn:pwd", "auth_time": now})
        response = httpx.get(f"{server.url}/transfer", headers=bearer(weak))
        assert response.status_code == 401
        (challenge,) = parse_challenges(response.headers["www-authenticate"])
        assert challenge.error == "insufficient_user_authentication"
        assert dict(challenge.extra)["acr_values"] == "urn:mfa"
        document = httpx.get(f"{server.url}/.well-known/oauth-protected-resource/v1").json()
        assert document["scopes_supported"] == ["write"]
