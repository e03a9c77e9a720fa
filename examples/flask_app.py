"""A Flask app protected by tokenguard's Flask extension.

Run against your own provider:
    TOKENGUARD_ISSUER=https://idp.example.com/oidc TOKENGUARD_AUDIENCE=https://api.example.com \
        flask --app examples.flask_app run
"""

from __future__ import annotations

import os

from flask import Flask

from tokenguard import TokenGuard
from tokenguard.flask import FlaskTokenGuard, current_token


def create_app(guard: TokenGuard | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update({k: v for k, v in os.environ.items() if k.startswith("TOKENGUARD_")})
    tg = FlaskTokenGuard(app, guard, public_paths=("/health",))

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/books")
    @tg.requires("library-api-checked-books")
    def books() -> dict[str, object]:
        return {"user": current_token.subject, "scopes": sorted(current_token.scopes)}

    return app
