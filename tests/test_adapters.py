"""Adapters end to end: real uvicorn (ASGI) and a threaded Werkzeug server (WSGI), driven by httpx.

Each row of the README's "What a client gets back" table is checked on every stack: Starlette middleware,
FastAPI dependencies, the WSGI middleware and the Flask extension.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Security
from flask import Flask
from starlette.applications import Starlette
from starlette.authentication import requires as starlette_requires
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from tokenguard import TokenClaims, TokenGuard, parse_challenges
from tokenguard.fastapi import setup
from tokenguard.flask import FlaskTokenGuard, current_token
from tokenguard.starlette import TokenGuardMiddleware, requires
from tokenguard.testing import Fault, LocalIssuer
from tokenguard.wsgi import CLAIMS_KEY, TokenGuardWSGIMiddleware

from .conftest import API, UvicornServer, WSGIServer

pytestmark = pytest.mark.integration


# ---------------------------------------------------------------- applications


def starlette_app(guard: TokenGuard) -> Any:
    async def books(request: Request) -> JSONResponse:
        claims: TokenClaims = request.state.token
        return JSONResponse({"sub": claims.subject, "scope_key": request.scope["tokenguard"] is claims})

    @requires(guard, "write")
    async def write(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    @starlette_requires("read")
    async def starlette_native(request: Request) -> JSONResponse:
        return JSONResponse({"user": request.user.display_name})

    async def cached(request: Request) -> PlainTextResponse:
        return PlainTextResponse("x", headers={"Cache-Control": "public, max-age=60", "Vary": "Accept-Encoding"})

    async def private(request: Request) -> PlainTextResponse:
        return PlainTextResponse("x", headers={"Cache-Control": "private, max-age=5"})

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> Any:
            for i in range(5):
                yield f"chunk{i};".encode()
                await asyncio.sleep(0.01)

        return StreamingResponse(chunks(), media_type="text/plain")

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"sub": websocket.scope["tokenguard"].subject})
        await websocket.close()

    app = Starlette(
        routes=[
            Route("/books", books),
            Route("/write", write),
            Route("/native", starlette_native),
            Route("/cached", cached),
            Route("/private", private),
            Route("/health", health),
            Route("/stream", stream),
            WebSocketRoute("/ws", ws),
        ]
    )
    return TokenGuardMiddleware(app, guard, public_paths=("/health",))


def fastapi_app(guard: TokenGuard) -> FastAPI:
    app = FastAPI()
    setup(app, guard, middleware=True, public_paths=("/health",))

    @app.get("/books")
    async def books(claims: TokenClaims = Security(guard.requires("read"))) -> dict[str, Any]:
        return {"sub": claims.subject}

    @app.get("/write")
    async def write(claims: TokenClaims = Security(guard.requires("write"))) -> dict[str, Any]:
        return {"ok": True}

    @app.get("/either")
    async def either(claims: TokenClaims = Security(guard.requires("write", "read", any_of=True))) -> dict[str, Any]:
        return {"ok": True}

    @app.get("/cached")
    async def cached() -> Any:
        return PlainTextResponse("x", headers={"Cache-Control": "public, max-age=60"})

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def fastapi_dependency_only_app(guard: TokenGuard) -> FastAPI:
    """No middleware: routes without a requirement are public, requirements render errors."""
    app = FastAPI()
    setup(app, guard)

    @app.get("/books")
    async def books(claims: TokenClaims = Security(guard.requires("read"))) -> dict[str, Any]:
        return {"sub": claims.subject}

    @app.get("/open")
    async def open_route() -> dict[str, str]:
        return {"open": "yes"}

    return app


def flask_app(guard: TokenGuard) -> Flask:
    app = Flask(__name__)
    tg = FlaskTokenGuard(app, guard, public_paths=("/health",))

    @app.get("/books")
    @tg.requires("read")
    def books() -> dict[str, Any]:
        return {"sub": current_token.subject}

    @app.get("/write")
    @tg.requires("write")
    def write() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/either")
    @tg.requires_any("write", "read")
    def either() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/cached")
    @tg.requires()
    def cached() -> Any:
        return "x", 200, {"Cache-Control": "public, max-age=60"}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def wsgi_app(guard: TokenGuard) -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        claims = environ[CLAIMS_KEY]
        path = environ["PATH_INFO"]
        if path == "/write" and "write" not in claims.scopes:
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"app-level"]
        headers = [("Content-Type", "application/json")]
        if path == "/cached":
            headers.append(("Cache-Control", "public, max-age=60"))
        start_response("200 OK", headers)
        return [json.dumps({"sub": claims.subject if claims else None}).encode()]

    return TokenGuardWSGIMiddleware(app, guard, public_paths=("/health",))


ASGI_STACKS = {"starlette": starlette_app, "fastapi": fastapi_app}
WSGI_STACKS = {"flask": flask_app, "wsgi": wsgi_app}
ALL_STACKS = [*ASGI_STACKS, *WSGI_STACKS]


@pytest.fixture(scope="module")
def adapter_issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer(algorithms=("ES256",)) as issuer:
        yield issuer


@pytest.fixture(params=ALL_STACKS)
def served(request: pytest.FixtureRequest, adapter_issuer: LocalIssuer) -> Iterator[tuple[str, str]]:
    """(stack name, base URL) of the stack serving on a loopback port."""
    name = request.param
    guard = adapter_issuer.guard()
    if name in ASGI_STACKS:
        with UvicornServer(ASGI_STACKS[name](guard)) as server:
            yield name, server.url
    else:
        with WSGIServer(WSGI_STACKS[name](guard)) as server:
            yield name, server.url


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def challenge(response: httpx.Response) -> Any:
    return parse_challenges(response.headers["www-authenticate"])[0]


def assert_no_store(response: httpx.Response) -> None:
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


# ---------------------------------------------------------------- behaviour table, every stack


def test_no_credentials_is_bare_401(served: tuple[str, str]) -> None:
    """No credentials: 401, challenge with realm and no error code, no-store."""
    _, url = served
    response = httpx.get(f"{url}/books")
    assert response.status_code == 401
    found = challenge(response)
    assert found.realm == "api" and found.error is None
    assert_no_store(response)


@pytest.mark.parametrize("header", ["Bearer", "Bearer a b", "Bearer ä", "Bearerxyz"])
def test_malformed_header_is_400(served: tuple[str, str], header: str) -> None:
    """Malformed Authorization: 400 invalid_request with JSON body."""
    _, url = served
    response = httpx.get(f"{url}/books", headers={"Authorization": header.encode("utf-8")})
    assert response.status_code == 400
    assert challenge(response).error == "invalid_request"
    assert response.json()["error"] == "invalid_request"
    assert_no_store(response)


def test_two_authorization_headers_are_400(served: tuple[str, str], adapter_issuer: LocalIssuer) -> None:
    """Two Authorization headers: 400."""
    _, url = served
    token = adapter_issuer.issue(alg="ES256", scope="read")
    response = httpx.get(f"{url}/books", headers=[("Authorization", f"Bearer {token}"), ("Authorization", "Bearer x")])
    assert response.status_code == 400


def test_query_token_refused_by_default(served: tuple[str, str], adapter_issuer: LocalIssuer) -> None:
    """A token in the query string is 400 when query tokens are not enabled."""
    _, url = served
    token = adapter_issuer.issue(alg="ES256", scope="read")
    response = httpx.get(f"{url}/books", params={"access_token": token})
    assert response.status_code == 400


def test_valid_token_is_200_with_vary_and_no_store(served: tuple[str, str], adapter_issuer: LocalIssuer) -> None:
    """A good token passes; the response varies on Authorization and is not stored."""
    _, url = served
    response = httpx.get(f"{url}/books", headers=bearer(adapter_issuer.issue(alg="ES256", scope="read")))
    assert response.status_code == 200, response.text
    assert response.json()["sub"] == "user-1"
    assert "Authorization" in response.headers["vary"]
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"expires_in": -600}, "token expired"),
        ({"audience": "https://other.api"}, "wrong audience"),
    ],
)
def test_bad_tokens_are_401_invalid_token(
    served: tuple[str, str], adapter_issuer: LocalIssuer, options: dict[str, Any], reason: str
) -> None:
    """Expired or foreign tokens: 401 invalid_token with a short description."""
    _, url = served
    response = httpx.get(f"{url}/books", headers=bearer(adapter_issuer.issue(alg="ES256", scope="read", **options)))
    assert response.status_code == 401
    found = challenge(response)
    assert found.error == "invalid_token"
    assert found.error_description == reason
    assert response.json() == {"error": "invalid_token", "error_description": reason}
    assert_no_store(response)


def test_forged_signature_is_401(served: tuple[str, str], adapter_issuer: LocalIssuer) -> None:
    """A token with a tampered payload is refused and the token is not echoed."""
    _, url = served
    token = adapter_issuer.issue(alg="ES256", scope="read")
    head, _, sig = token.split(".")
    forged = f"{head}.{adapter_issuer.issue(alg='ES256', scope='read write admin').split('.')[1]}.{sig}"
    response = httpx.get(f"{url}/books", headers=bearer(forged))
    assert response.status_code == 401
    assert forged not in response.text and forged not in response.headers["www-authenticate"]


def test_missing_scope_is_403_with_scope(served: tuple[str, str], adapter_issuer: LocalIssuer) -> None:
    """A valid token without the route's scope: 403 insufficient_scope naming the scope."""
    name, url = served
    response = httpx.get(f"{url}/write", headers=bearer(adapter_issuer.issue(alg="ES256", scope="read")))
    assert response.status_code == 403
    if name == "wsgi":
        return  # plain WSGI apps decide scopes themselves
    found = challenge(response)
    assert found.error == "insufficient_scope"
    assert found.scope == ("write",)
    assert_no_store(response)


def test_public_path_needs_no_token(served: tuple[str, str]) -> None:
    """Health checks are public."""
    _, url = served
    assert httpx.get(f"{url}/health").status_code == 200


def test_public_cache_control_rewritten_to_private(served: tuple[str, str], adapter_issuer: LocalIssuer) -> None:
    """Cache-Control: public on an authenticated response becomes private."""
    _, url = served
    response = httpx.get(f"{url}/cached", headers=bearer(adapter_issuer.issue(alg="ES256", scope="read")))
    assert response.status_code == 200
    assert response.headers["cache-control"] == "private, max-age=60"
    assert "Authorization" in response.headers["vary"]


def test_opaque_token_through_the_stack(served: tuple[str, str], adapter_issuer: LocalIssuer) -> None:
    """An opaque token is introspected and accepted through every adapter."""
    _, url = served
    response = httpx.get(f"{url}/books", headers=bearer(adapter_issuer.issue_opaque(scope="read")))
    assert response.status_code == 200


def test_upstream_down_is_503(adapter_issuer: LocalIssuer) -> None:
    """Introspection down and nothing cached: 503 with Retry-After, on both stacks."""
    token = adapter_issuer.issue_opaque(scope="read")
    adapter_issuer.faults["/introspect"] = Fault(status=502)
    try:
        for make in (*ASGI_STACKS.values(),):
            with UvicornServer(make(adapter_issuer.guard())) as server:
                response = httpx.get(f"{server.url}/books", headers=bearer(token))
                assert response.status_code == 503
                assert int(response.headers["retry-after"]) >= 1
                assert "www-authenticate" not in response.headers
                assert_no_store(response)
        for make_wsgi in WSGI_STACKS.values():
            with WSGIServer(make_wsgi(adapter_issuer.guard())) as server:
                response = httpx.get(f"{server.url}/books", headers=bearer(token))
                assert response.status_code == 503
                assert "retry-after" in response.headers
    finally:
        del adapter_issuer.faults["/introspect"]


# ---------------------------------------------------------------- stack-specific


def test_starlette_conventions(adapter_issuer: LocalIssuer) -> None:
    """scope['tokenguard'], request.state.token, request.user and Starlette's @requires all work."""
    with UvicornServer(starlette_app(adapter_issuer.guard())) as server:
        good = bearer(adapter_issuer.issue(alg="ES256", scope="read"))
        assert httpx.get(f"{server.url}/books", headers=good).json() == {"sub": "user-1", "scope_key": True}
        assert httpx.get(f"{server.url}/native", headers=good).json() == {"user": "user-1"}
        no_read = bearer(adapter_issuer.issue(alg="ES256", scope="other"))
        assert httpx.get(f"{server.url}/native", headers=no_read).status_code == 403


def test_route_private_cache_control_kept(adapter_issuer: LocalIssuer) -> None:
    """A route's own private Cache-Control is kept; Vary is merged."""
    with UvicornServer(starlette_app(adapter_issuer.guard())) as server:
        response = httpx.get(f"{server.url}/private", headers=bearer(adapter_issuer.issue(alg="ES256", scope="read")))
        assert response.headers["cache-control"] == "private, max-age=5"
        assert response.headers["vary"] == "Authorization"


def test_streaming_passes_through(adapter_issuer: LocalIssuer) -> None:
    """Streaming responses arrive chunk by chunk, unbuffered and complete."""
    with UvicornServer(starlette_app(adapter_issuer.guard())) as server:
        headers = bearer(adapter_issuer.issue(alg="ES256", scope="read"))
        with httpx.stream("GET", f"{server.url}/stream", headers=headers) as response:
            chunks = list(response.iter_raw())
        assert b"".join(chunks) == b"chunk0;chunk1;chunk2;chunk3;chunk4;"
        assert len(chunks) >= 2


def test_websocket_accepted_with_token_and_rejected_without(adapter_issuer: LocalIssuer) -> None:
    """A WebSocket handshake with a good token is accepted; without one it is refused before accept."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with UvicornServer(starlette_app(adapter_issuer.guard())) as server:
        ws_url = server.url.replace("http://", "ws://") + "/ws"
        token = adapter_issuer.issue(alg="ES256", scope="read")
        with connect(ws_url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            assert json.loads(ws.recv()) == {"sub": "user-1"}
        with pytest.raises(InvalidStatus) as info:
            connect(ws_url)
        assert info.value.response.status_code == 403
        with pytest.raises(InvalidStatus):
            connect(ws_url, additional_headers={"Authorization": "Bearer bad.token.here"})


def test_fastapi_any_of_and_openapi(adapter_issuer: LocalIssuer) -> None:
    """any_of requirements work, and OpenAPI declares the bearer scheme on protected routes."""
    with UvicornServer(fastapi_app(adapter_issuer.guard())) as server:
        response = httpx.get(f"{server.url}/either", headers=bearer(adapter_issuer.issue(alg="ES256", scope="read")))
        assert response.status_code == 200
        schema = httpx.get(f"{server.url}/openapi.json").json()
        assert schema["components"]["securitySchemes"]["BearerToken"] == {
            "type": "http",
            "scheme": "bearer",
            "description": schema["components"]["securitySchemes"]["BearerToken"]["description"],
        }
        assert schema["paths"]["/books"]["get"]["security"] == [{"BearerToken": ["read"]}]
        assert httpx.get(f"{server.url}/docs").status_code == 200


def test_fastapi_dependency_without_middleware(adapter_issuer: LocalIssuer) -> None:
    """Without the middleware, requirements still verify and render RFC 6750 errors."""
    with UvicornServer(fastapi_dependency_only_app(adapter_issuer.guard())) as server:
        assert httpx.get(f"{server.url}/open").status_code == 200
        missing = httpx.get(f"{server.url}/books")
        assert missing.status_code == 401 and challenge(missing).error is None
        ok = httpx.get(f"{server.url}/books", headers=bearer(adapter_issuer.issue(alg="ES256", scope="read")))
        assert ok.status_code == 200 and ok.json() == {"sub": "user-1"}
        denied = httpx.get(f"{server.url}/books", headers=bearer(adapter_issuer.issue(alg="ES256", scope="x")))
        assert denied.status_code == 403 and challenge(denied).scope == ("read",)


def test_flask_errors_are_json_not_html(adapter_issuer: LocalIssuer) -> None:
    """Flask renders RFC 6750 JSON, and g.token / current_token carry the claims."""
    app = flask_app(adapter_issuer.guard())
    client = app.test_client()
    response = client.get("/books")
    assert response.status_code == 401
    assert response.is_json
    assert b"<html" not in response.data.lower()
    ok = client.get("/books", headers=bearer(adapter_issuer.issue(alg="ES256", scope="read")))
    assert ok.json == {"sub": "user-1"}


def test_flask_config_builds_guard(adapter_issuer: LocalIssuer) -> None:
    """FlaskTokenGuard() with app.config builds its own guard; protect-all covers undecorated views."""
    app = Flask(__name__)
    app.config.update(
        TOKENGUARD_ISSUER=adapter_issuer.issuer,
        TOKENGUARD_AUDIENCE=API,
        TOKENGUARD_CLIENT_ID=adapter_issuer.client_id,
        TOKENGUARD_CLIENT_SECRET=adapter_issuer.client_secret,
        TOKENGUARD_PROTECT_ALL=True,
    )
    tg = FlaskTokenGuard()
    tg.init_app(app)

    @app.get("/plain")
    def plain() -> dict[str, Any]:
        return {"sub": current_token.subject}

    client = app.test_client()
    assert client.get("/plain").status_code == 401
    token = adapter_issuer.issue_opaque(scope="read")
    assert client.get("/plain", headers=bearer(token)).json == {"sub": "user-1"}
    assert tg.guard is not None
    tg.guard.close()


def test_fifty_concurrent_cold_requests_one_jwks_fetch_asgi() -> None:
    """50 concurrent first requests through uvicorn cause exactly one JWKS fetch."""
    with LocalIssuer(algorithms=("ES256",)) as issuer:
        issuer.faults["/jwks"] = Fault(status=0, delay=0.3)
        tokens = [issuer.issue(alg="ES256", scope="read") for _ in range(50)]
        with UvicornServer(fastapi_app(issuer.guard(introspection=False))) as server:

            async def main() -> list[int]:
                async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                    responses = await asyncio.gather(*(client.get("/books", headers=bearer(t)) for t in tokens))
                return [r.status_code for r in responses]

            assert asyncio.run(main()) == [200] * 50
        assert issuer.requests["/jwks"] == 1


def test_fifty_concurrent_cold_requests_one_jwks_fetch_wsgi() -> None:
    """50 concurrent first requests through a threaded WSGI server cause exactly one JWKS fetch."""
    with LocalIssuer(algorithms=("ES256",)) as issuer:
        issuer.faults["/jwks"] = Fault(status=0, delay=0.3)
        tokens = [issuer.issue(alg="ES256", scope="read") for _ in range(50)]
        statuses: list[int] = []
        with WSGIServer(flask_app(issuer.guard(introspection=False))) as server:
            barrier = threading.Barrier(50)

            def call(token: str) -> None:
                barrier.wait()
                statuses.append(httpx.get(f"{server.url}/books", headers=bearer(token), timeout=30).status_code)

            threads = [threading.Thread(target=call, args=(t,)) for t in tokens]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert statuses == [200] * 50
        assert issuer.requests["/jwks"] == 1
