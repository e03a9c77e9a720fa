"""The apps ``bench_http.py`` serves: one trivial JSON endpoint, three ways.

``BENCH_MODE`` picks the protection: ``bare`` (none), ``tokenguard`` (the
library's middleware), ``naive`` (PyJWT ``decode`` on every request, what a
hand-written middleware does). ``BENCH_KEY`` is the path of the RS256 public
key in PEM. Both apps answer ``{"ok": true}``; protected ones 401 without a
valid token.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jwt as pyjwt

from tokenguard import TokenGuard

ISS = "https://issuer.example.com/oidc"
AUD = "https://api.example.com"
BODY = b'{"ok":true}'


def _settings() -> tuple[str, bytes]:
    mode = os.environ.get("BENCH_MODE", "bare")
    with open(os.environ["BENCH_KEY"], "rb") as handle:
        return mode, handle.read()


def _guard(pem: bytes) -> TokenGuard:
    return TokenGuard.from_keys(issuer=ISS, audience=AUD, keys=[pem], algorithms=["RS256"])


# ---------------------------------------------------------------------- ASGI


def asgi_app() -> Any:
    """A Starlette app (``uvicorn --factory benchmarks.http_apps:asgi_app``)."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    mode, pem = _settings()

    async def hello(request: Any) -> Response:
        return Response(BODY, media_type="application/json")

    app: Any = Starlette(routes=[Route("/", hello)])
    if mode == "tokenguard":
        from tokenguard.starlette import TokenGuardMiddleware

        return TokenGuardMiddleware(app, _guard(pem))
    if mode == "naive":
        key = pyjwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(_jwk(pem)))
        inner = app

        async def naive(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                header = dict(scope["headers"]).get(b"authorization", b"").decode()
                try:
                    pyjwt.decode(header[7:], key, algorithms=["RS256"], audience=AUD, issuer=ISS)
                except pyjwt.PyJWTError:
                    await send({"type": "http.response.start", "status": 401, "headers": []})
                    await send({"type": "http.response.body", "body": b""})
                    return
            await inner(scope, receive, send)

        return naive
    return app


# ---------------------------------------------------------------------- WSGI


def wsgi_app() -> Any:
    """A Flask app (``gunicorn 'benchmarks.http_apps:wsgi_app()'``)."""
    from flask import Flask, Response

    mode, pem = _settings()
    app = Flask("bench")

    @app.get("/")
    def hello() -> Response:
        return Response(BODY, mimetype="application/json")

    if mode == "tokenguard":
        from tokenguard.flask import FlaskTokenGuard

        FlaskTokenGuard(app, _guard(pem), protect_all=True)
    elif mode == "naive":
        from flask import abort, request

        key = pyjwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(_jwk(pem)))

        @app.before_request
        def naive() -> None:
            header = request.headers.get("Authorization", "")
            try:
                pyjwt.decode(header[7:], key, algorithms=["RS256"], audience=AUD, issuer=ISS)
            except pyjwt.PyJWTError:
                abort(401)

    return app


def _jwk(pem: bytes) -> dict[str, Any]:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    result: dict[str, Any] = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(load_pem_public_key(pem)))
    return result
