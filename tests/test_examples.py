"""The shipped examples run and behave: each is served for real and exercised."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from examples import fastapi_app, flask_app, starlette_app
from tokenguard import TokenGuard
from tokenguard.pytest_plugin import TokenFactory

from .asgi_support import GuardedServer
from .conftest import API, WSGIServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
SCOPE = "library-api-checked-books"


@pytest.mark.parametrize("module", [fastapi_app, starlette_app, flask_app])
def test_example_app(
    module: object, tokenguard_guard: Callable[..., TokenGuard], tokenguard_token: TokenFactory
) -> None:
    """Each example answers 200 / 401 / 403 as documented (tokens from the pytest plugin's issuer)."""
    guard = tokenguard_guard(audience=API)
    app = module.create_app(guard)  # type: ignore[attr-defined]
    server = WSGIServer(app) if module is flask_app else GuardedServer(app, guard)
    with server:
        assert httpx.get(f"{server.url}/health").status_code == 200
        assert httpx.get(f"{server.url}/books").status_code == 401
        response = httpx.get(f"{server.url}/books", headers=tokenguard_token.header(SCOPE, audience=API))
        assert response.status_code == 200 and response.json()["user"] == "user-1"
        weak = tokenguard_token.header("profile", audience=API)
        assert httpx.get(f"{server.url}/books", headers=weak).status_code == 403


def test_example_django_project(tokenguard_guard: Callable[..., TokenGuard], tokenguard_token: TokenFactory) -> None:
    """The Django example (plain view and DRF views) served for real: 200 / 401 / 403 as documented."""
    from django.core.wsgi import get_wsgi_application
    from django.test import override_settings

    from .django_support import configure_django

    configure_django()
    with (
        override_settings(TOKENGUARD_GUARD=tokenguard_guard(audience=API), ROOT_URLCONF="examples.django_app.urls"),
        WSGIServer(get_wsgi_application()) as server,
    ):
        assert httpx.get(f"{server.url}/health").status_code == 200
        for path in ("/books", "/loans", "/me"):
            assert httpx.get(f"{server.url}{path}").status_code == 401
        good = tokenguard_token.header(f"{SCOPE} library-api-loans profile", audience=API)
        assert httpx.get(f"{server.url}/books", headers=good).json()["user"] == "user-1"
        assert httpx.get(f"{server.url}/loans", headers=good).json()["user"] == "user-1"
        assert httpx.get(f"{server.url}/me", headers=good).json() == {"user": "user-1", "client": "client-app"}
        weak = tokenguard_token.header("other", audience=API)
        for path in ("/books", "/loans", "/me"):
            assert httpx.get(f"{server.url}{path}", headers=weak).status_code == 403


def test_demo_runs_and_every_case_passes() -> None:
    """The README's demo exits 0 and prints each expected outcome."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for line in ("ok  200 GET /health", "ok  401 GET /books", "ok  403 GET /books", "ok  200 GET /loans"):
        assert line in result.stdout
    assert "BAD" not in result.stdout
