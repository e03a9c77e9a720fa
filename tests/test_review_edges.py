"""Seams between the adapters, options and sender-constrained tokens, found in review.

Each test drives a real adapter (Django's test client, FastAPI/Starlette on
uvicorn, plain WSGI under a real server) against the loopback issuer.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

from tokenguard import ConfigurationError
from tokenguard.fastapi import setup
from tokenguard.options import AdapterOptions
from tokenguard.testing import LocalIssuer

from .conftest import UvicornServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def idp() -> Iterator[LocalIssuer]:
    with LocalIssuer(algorithms=("ES256",)) as issuer:
        yield issuer


# ---------------------------------------------------------------- FastAPI setup(options=...)


def test_fastapi_setup_takes_an_options_object(idp: LocalIssuer) -> None:
    """setup(..., options=AdapterOptions(...)) once clashed with setup's own protect/public_paths
    defaults ("pass options= or protect, public_paths, not both") at the first request."""
    app = FastAPI()
    setup(app, idp.guard(), middleware=True, options=AdapterOptions(public_paths=["/health"]))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/books")
    async def books() -> dict[str, str]:
        return {"books": "yes"}

    with UvicornServer(app) as server:
        assert httpx.get(f"{server.url}/health").status_code == 200
        assert httpx.get(f"{server.url}/books").status_code == 401


def test_fastapi_setup_checks_middleware_options_at_once(idp: LocalIssuer) -> None:
    """A bad middleware option fails at setup(), not when the first request builds the stack."""
    with pytest.raises(ConfigurationError, match="public_paths"):
        setup(FastAPI(), idp.guard(), middleware=True, public_paths="/health")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not both"):
        setup(FastAPI(), idp.guard(), middleware=True, protect=False, options=AdapterOptions())
