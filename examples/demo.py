"""tokenguard demo: a protected FastAPI API in front of a local issuer.

Starts a real issuer (tokenguard.testing.LocalIssuer) and the API under
uvicorn on loopback ports, runs the guard's readiness check, then calls the
API itself and shows the 200 / 401 / 403 outcomes.

Without ``--serve`` both servers stop after the walkthrough, so no curl lines
are printed (they would point at a server that is gone). With ``--serve``
(what ``./scripts/demo`` runs) the ready-to-paste curl lines are printed and
both servers keep running until Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI, Security

from tokenguard import TokenClaims, TokenGuard
from tokenguard.fastapi import setup
from tokenguard.testing import LocalIssuer

API_AUDIENCE = "https://library.example/api"
BOOKS_SCOPE = "library-api-checked-books"


def build_app(guard: TokenGuard) -> FastAPI:
    app = FastAPI(title="Library API (tokenguard demo)")
    # Every path except the public ones needs a valid token; routes add scopes.
    setup(app, guard, middleware=True, public_paths=("/health", "/docs", "/openapi.json"))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/books")
    async def books(claims: TokenClaims = Security(guard.requires(BOOKS_SCOPE))) -> dict[str, object]:
        return {"user": claims.subject, "token_type": claims.token_type, "books": ["Cien años de soledad"]}

    @app.get("/loans")
    async def loans(claims: TokenClaims = Security(guard.requires("library-api-loans"))) -> dict[str, object]:
        # Reached with opaque tokens too: the guard introspects them (RFC 7662).
        return {"user": claims.subject, "token_type": claims.token_type, "loans": []}

    return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli_command() -> str:
    """How to run the ``tokenguard`` command installed next to this Python (``.venv/bin`` is not on PATH)."""
    script = Path(sys.executable).parent / "tokenguard"
    if shutil.which("tokenguard") == str(script) or not script.exists():
        return "tokenguard"
    try:
        relative = os.path.relpath(script)
    except ValueError:  # another drive (Windows)
        return str(script)
    return str(script) if relative.startswith("..") else relative


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", action="store_true", help="print curl lines and keep serving until Ctrl-C")
    args = parser.parse_args()
    # Configuration mistakes are logged at WARNING by tokenguard.diagnostics; show them inline.
    logging.basicConfig(level=logging.WARNING, format="      log %(levelname)s: %(message)s", stream=sys.stdout)

    issuer = LocalIssuer(path="/oidc").start()
    guard = issuer.guard(audience=API_AUDIENCE)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(guard), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    api = f"http://127.0.0.1:{port}"

    good = issuer.issue(scope=f"{BOOKS_SCOPE} profile", audience=API_AUDIENCE)
    no_scope = issuer.issue(scope="profile", audience=API_AUDIENCE)
    other_api = issuer.issue(scope=BOOKS_SCOPE, audience="https://another.example/api")
    expired = issuer.issue(scope=BOOKS_SCOPE, audience=API_AUDIENCE, expires_in=-600)
    opaque = issuer.issue_opaque(scope="library-api-loans", audience=API_AUDIENCE)

    print(f"issuer: {issuer.issuer}  (discovery, JWKS, introspection on a real socket)")
    print(f"api:    {api}   docs: {api}/docs\n")
    print("readiness (guard.check_sync()):")
    print("\n".join("  " + line for line in str(guard.check_sync()).splitlines()) + "\n")

    cases = [
        ("public route, no token", "/health", None, 200),
        ("no token", "/books", None, 401),
        ("JWT with the books scope", "/books", good, 200),
        ("JWT without the scope", "/books", no_scope, 403),
        ("JWT for another API", "/books", other_api, 401),
        ("expired JWT", "/books", expired, 401),
        ("malformed header", "/books", "not a token", 400),
        ("opaque token, introspected", "/loans", opaque, 200),
    ]
    failures = 0
    with httpx.Client(base_url=api) as client:
        for label, path, token, expected in cases:
            headers = {}
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            response = client.get(path, headers=headers)
            ok = response.status_code == expected
            failures += not ok
            challenge = response.headers.get("www-authenticate", "")
            detail = challenge or response.text[:80]
            print(f"  {'ok ' if ok else 'BAD'} {response.status_code} GET {path:<8} {label:<28} {detail}")
    print(f"\nissuer calls: {dict(issuer.requests)}")
    if args.serve:
        # Printed only now, while both servers are up and stay up. The walkthrough's tokens live 5
        # minutes; these last a working day, so the lines keep working for as long as the demo serves.
        day = 8 * 3600
        good = issuer.issue(scope=f"{BOOKS_SCOPE} profile", audience=API_AUDIENCE, expires_in=day)
        opaque = issuer.issue_opaque(scope="library-api-loans", audience=API_AUDIENCE, expires_in=day)
        no_scope = issuer.issue(scope="profile", audience=API_AUDIENCE, expires_in=day)
        print("\nTry it yourself (both servers run until Ctrl-C):")
        print(f"  curl -i {api}/health")
        print(f"  curl -i {api}/books")
        print(f"  curl -i -H 'Authorization: Bearer {good}' {api}/books")
        print(f"  curl -i -H 'Authorization: Bearer {opaque}' {api}/loans")
        print(f"  {cli_command()} inspect {no_scope}")
        print("\nserving; Ctrl-C to stop", flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    else:
        print("\nservers stopped; run with --serve (./scripts/demo does) to keep them up and get curl lines")
    server.should_exit = True
    thread.join(timeout=5)
    issuer.stop()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
