"""Why the docs steer Starlette users to tokenguard's ``requires``: the two decorators side by side."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.authentication import requires as starlette_requires
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tokenguard import TokenGuard, parse_challenges
from tokenguard.pytest_plugin import TokenFactory
from tokenguard.starlette import TokenGuardMiddleware, requires

from .asgi_support import GuardedServer

pytestmark = pytest.mark.integration


def build(guard: TokenGuard) -> Starlette:
    async def scopes(request: Request) -> JSONResponse:
        return JSONResponse({"scopes": sorted(request.auth.scopes), "user": request.user.display_name})

    return Starlette(
        routes=[
            Route("/native", starlette_requires("read")(scopes)),
            Route("/tokenguard", requires(guard, "read")(scopes)),
        ],
        middleware=[Middleware(TokenGuardMiddleware, guard=guard)],
    )


def test_request_auth_scopes_and_the_403_each_decorator_sends(
    tokenguard_guard: Callable[..., TokenGuard], tokenguard_token: TokenFactory
) -> None:
    """Both see request.auth.scopes; only tokenguard's 403 carries the RFC 6750 challenge naming the scope."""
    guard = tokenguard_guard()
    with GuardedServer(build(guard), guard) as server:
        good = tokenguard_token.header("read extra", subject="alice")
        for path in ("/native", "/tokenguard"):
            assert httpx.get(server.url + path, headers=good).json() == {"scopes": ["extra", "read"], "user": "alice"}
        weak = tokenguard_token.header("other")
        native = httpx.get(server.url + "/native", headers=weak)
        assert native.status_code == 403 and "www-authenticate" not in native.headers
        ours = httpx.get(server.url + "/tokenguard", headers=weak)
        found = parse_challenges(ours.headers["www-authenticate"])[0]
        assert ours.status_code == 403 and found.error == "insufficient_scope" and found.scope == ("read",)
        assert ours.headers["cache-control"] == "no-store"
