"""The shipped examples run and behave: each is served for real and exercised."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from examples import fastapi_app, flask_app, starlette_app
from tokenguard.testing import LocalIssuer

from .conftest import API, UvicornServer, WSGIServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
SCOPE = "library-api-checked-books"


@pytest.mark.parametrize("module", [fastapi_app, starlette_app, flask_app])
def test_example_app(module: object) -> None:
    """Each example answers 200 / 401 / 403 as documented."""
    with LocalIssuer(algorithms=("ES256",)) as issuer:
        app = module.create_app(issuer.guard(audience=API))  # type: ignore[attr-defined]
        server = WSGIServer(app) if module is flask_app else UvicornServer(app)
        with server:
            assert httpx.get(f"{server.url}/health").status_code == 200
            assert httpx.get(f"{server.url}/books").status_code == 401
            good = issuer.issue(alg="ES256", scope=SCOPE)
            response = httpx.get(f"{server.url}/books", headers={"Authorization": f"Bearer {good}"})
            assert response.status_code == 200 and response.json()["user"] == "user-1"
            weak = issuer.issue(alg="ES256", scope="profile")
            assert httpx.get(f"{server.url}/books", headers={"Authorization": f"Bearer {weak}"}).status_code == 403


def test_demo_runs_and_every_case_passes() -> None:
    """The README's demo exits 0 and prints each expected outcome."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for line in ("ok  200 GET /health", "ok  401 GET /books", "ok  403 GET /books", "ok  200 GET /loans"):
        assert line in result.stdout
    assert "BAD" not in result.stdout
