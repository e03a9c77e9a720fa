"""A FastAPI API protected by tokenguard.

Run against your own provider:
    TOKENGUARD_ISSUER=https://idp.example.com/oidc TOKENGUARD_AUDIENCE=https://api.example.com \
        uvicorn examples.fastapi_app:app
"""

from __future__ import annotations

import os

from fastapi import FastAPI, Security

from tokenguard import TokenClaims, TokenGuard
from tokenguard.fastapi import setup


def create_app(guard: TokenGuard) -> FastAPI:
    app = FastAPI(title="Books API")
    setup(app, guard, middleware=True, public_paths=("/health",))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/books")
    async def books(claims: TokenClaims = Security(guard.requires("library-api-checked-books"))) -> dict[str, object]:
        return {"user": claims.subject, "scopes": sorted(claims.scopes)}

    return app


if "TOKENGUARD_ISSUER" in os.environ:
    app = create_app(
        TokenGuard.from_issuer(
            os.environ["TOKENGUARD_ISSUER"],
            audience=os.environ["TOKENGUARD_AUDIENCE"],
            client_id=os.environ.get("TOKENGUARD_CLIENT_ID"),
            client_secret=os.environ.get("TOKENGUARD_CLIENT_SECRET"),
        )
    )
