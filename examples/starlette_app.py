"""A Starlette app protected by tokenguard's pure ASGI middleware."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tokenguard import TokenGuard
from tokenguard.starlette import TokenGuardMiddleware, requires


def create_app(guard: TokenGuard) -> TokenGuardMiddleware:
    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @requires(guard, "library-api-checked-books")
    async def books(request: Request) -> JSONResponse:
        claims = request.state.token
        return JSONResponse({"user": claims.subject, "scopes": sorted(claims.scopes)})

    app = Starlette(routes=[Route("/health", health), Route("/books", books)])
    return TokenGuardMiddleware(app, guard, public_paths=("/health",))
