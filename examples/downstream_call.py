"""A protected API that itself calls a downstream API with a managed token.

Incoming requests are verified by tokenguard; outgoing calls carry a token
that ClientCredentialsAuth obtains once, refreshes before expiry, re-obtains
on a 401 and revokes at shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Security

from tokenguard import TokenClaims, TokenGuard
from tokenguard.client import ClientCredentialsAuth
from tokenguard.fastapi import setup


def create_app(guard: TokenGuard, *, downstream_url: str, outbound: ClientCredentialsAuth) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(base_url=downstream_url, auth=outbound) as client:
            app.state.downstream = client
            yield
        outbound.close()  # revoke our token at shutdown

    app = FastAPI(lifespan=lifespan)
    setup(app, guard, middleware=True)

    @app.get("/report")
    async def report(claims: TokenClaims = Security(guard.requires("reports:read"))) -> dict[str, object]:
        downstream: httpx.AsyncClient = app.state.downstream
        answer = await downstream.get("/books")
        return {"user": claims.subject, "downstream_status": answer.status_code, "books": answer.json()}

    return app
