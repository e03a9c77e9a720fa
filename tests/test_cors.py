"""CORS preflights and the token check, with real CORS layers (Starlette's, Flask-CORS) inside and outside.

A browser sends no credentials on a preflight (Fetch standard, CORS-preflight
request), so a guard that demands a token on one fails every cross-origin call
before it starts. Where the CORS layer sits outside the guard it answers
preflights itself; where it sits inside (Flask-CORS is an ``after_request``
hook under the extension's ``before_request``), ``cors_preflight=True`` lets
preflights through. Only preflights: any other request without a token is 401.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tokenguard import ConfigurationError, TokenGuard
from tokenguard.options import AdapterOptions, is_cors_preflight
from tokenguard.starlette import TokenGuardMiddleware
from tokenguard.testing import LocalIssuer
from tokenguard.wsgi import TokenGuardWSGIMiddleware

ORIGIN = "https://spa.example"
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "GET",
    "Access-Control-Request-Headers": "authorization",
}
#: What a browser needs to read the challenges of a 401 or 403 (RFC 6750 §3) and a DPoP nonce.
EXPOSED = ["WWW-Authenticate", "DPoP-Nonce"]


async def books(request: Request) -> JSONResponse:
    return JSONResponse({"books": ["secret"]})


def starlette_app(guard: TokenGuard, *, cors_outside: bool, **options: Any) -> Starlette:
    cors = Middleware(
        CORSMiddleware,
        allow_origins=[ORIGIN],
        allow_headers=["Authorization"],
        expose_headers=EXPOSED,
    )
    tokens = Middleware(TokenGuardMiddleware, guard=guard, **options)
    # Starlette runs the first middleware listed outermost.
    stack = [cors, tokens] if cors_outside else [tokens, cors]
    return Starlette(routes=[Route("/books", books)], middleware=stack)


def call(app: Any, method: str, headers: dict[str, str]) -> httpx.Response:
    import asyncio

    async def run() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            return await client.request(method, "/books", headers=headers)

    return asyncio.run(run())


def test_cors_outside_answers_preflights_and_exposes_the_challenge(shared_issuer: LocalIssuer) -> None:
    """The recommended order: preflight 200 with no option; a 401 carries the CORS headers and exposes
    WWW-Authenticate, so the browser's script can read why it was refused."""
    app = starlette_app(shared_issuer.guard(), cors_outside=True)
    preflight = call(app, "OPTIONS", PREFLIGHT)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    refused = call(app, "GET", {"Origin": ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN
    assert "www-authenticate" in refused.headers["access-control-expose-headers"].lower()
    token = shared_issuer.issue(scope="read")
    allowed = call(app, "GET", {"Origin": ORIGIN, "Authorization": f"Bearer {token}"})
    assert allowed.status_code == 200 and allowed.json() == {"books": ["secret"]}


def test_cors_inside_needs_the_option_for_preflights(shared_issuer: LocalIssuer) -> None:
    """CORS inside the guard: preflights are 401 by default; with cors_preflight=True the CORS layer answers."""
    guard = shared_issuer.guard()
    refused = call(starlette_app(guard, cors_outside=False), "OPTIONS", PREFLIGHT)
    assert refused.status_code == 401
    app = starlette_app(guard, cors_outside=False, cors_preflight=True)
    preflight = call(app, "OPTIONS", PREFLIGHT)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    # Only preflights pass: a plain OPTIONS, or a GET from the same origin, still needs a token.
    assert call(app, "OPTIONS", {}).status_code == 401
    assert call(app, "OPTIONS", {"Origin": ORIGIN}).status_code == 401
    assert call(app, "GET", {"Origin": ORIGIN, "Access-Control-Request-Method": "GET"}).status_code == 401
    # A preflight carrying a token is no browser's preflight: the token is judged like any other.
    forged = call(app, "OPTIONS", {**PREFLIGHT, "Authorization": "Bearer not-a-token"})
    assert forged.status_code == 401


def secret_wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """A plain WSGI app that answers every method alike: the reason the option is off by default."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"secret for " + environ["REQUEST_METHOD"].encode()]


def test_wsgi_default_never_serves_a_preflight_the_content(shared_issuer: LocalIssuer) -> None:
    """Off by default: a WSGI app answering every method would otherwise send its content to a preflight."""
    import werkzeug.test

    guard = shared_issuer.guard()
    app = TokenGuardWSGIMiddleware(secret_wsgi_app, guard)
    client = werkzeug.test.Client(app)
    refused = client.open("/books", method="OPTIONS", headers=PREFLIGHT)
    assert refused.status_code == 401 and b"secret" not in refused.get_data()
    opened = werkzeug.test.Client(TokenGuardWSGIMiddleware(secret_wsgi_app, guard, cors_preflight=True))
    passed = opened.open("/books", method="OPTIONS", headers=PREFLIGHT)
    assert passed.status_code == 200  # the application answers: here, as it answers everything
    assert opened.open("/books", method="OPTIONS").status_code == 401


def test_flask_cors_answers_preflights_with_the_option(shared_issuer: LocalIssuer) -> None:
    """Flask-CORS runs after the extension's before_request: preflights need cors_preflight=True."""
    from flask import Flask
    from flask_cors import CORS

    from tokenguard.flask import FlaskTokenGuard

    def flask_app(**options: Any) -> Flask:
        app = Flask("cors")
        CORS(app, origins=[ORIGIN], expose_headers=EXPOSED)
        FlaskTokenGuard(app, shared_issuer.guard(), **options)

        @app.get("/books")
        def listing() -> dict[str, list[str]]:
            return {"books": ["secret"]}

        return app

    refused = flask_app().test_client().open("/books", method="OPTIONS", headers=PREFLIGHT)
    assert refused.status_code == 401
    client = flask_app(cors_preflight=True).test_client()
    preflight = client.open("/books", method="OPTIONS", headers=PREFLIGHT)
    assert preflight.status_code == 200 and preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert b"secret" not in preflight.get_data()
    denied = client.get("/books", headers={"Origin": ORIGIN})
    assert denied.status_code == 401
    assert denied.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "www-authenticate" in denied.headers["Access-Control-Expose-Headers"].lower()
    assert client.open("/books", method="OPTIONS").status_code == 401

    config = Flask("config")
    config.config["TOKENGUARD_CORS_PREFLIGHT"] = "true"
    extension = FlaskTokenGuard(config, shared_issuer.guard())
    assert extension.options.cors_preflight is True


@pytest.mark.parametrize("value", ["yes", 1, "true"])
def test_cors_preflight_must_be_a_bool(value: Any) -> None:
    """A non-boolean is refused at construction, naming the option."""
    with pytest.raises(ConfigurationError, match="cors_preflight must be True or False"):
        AdapterOptions(cors_preflight=value)


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("OPTIONS", {"origin": ORIGIN, "access-control-request-method": "PUT"}, True),
        ("OPTIONS", {"origin": ORIGIN}, False),
        ("OPTIONS", {"access-control-request-method": "PUT"}, False),
        ("OPTIONS", {"origin": "", "access-control-request-method": "PUT"}, False),
        ("GET", {"origin": ORIGIN, "access-control-request-method": "PUT"}, False),
        ("options", {"origin": ORIGIN, "access-control-request-method": "PUT"}, False),  # methods are case-sensitive
    ],
)
def test_what_a_preflight_is(method: str, headers: dict[str, str], expected: bool) -> None:
    """OPTIONS with both Origin and Access-Control-Request-Method, nothing less."""
    assert is_cors_preflight(method, headers.get) is expected
