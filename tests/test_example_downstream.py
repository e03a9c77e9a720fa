"""The downstream-call example: a protected API calling another protected API with a managed token."""

from __future__ import annotations

import httpx
import pytest

from examples.downstream_call import create_app
from tokenguard.client import ClientCredentialsAuth
from tokenguard.testing import LocalIssuer

from .conftest import UvicornServer
from .test_adapters import fastapi_app

pytestmark = pytest.mark.integration


def test_protected_api_calls_downstream_with_managed_token() -> None:
    """Inbound token verified; outbound token obtained once and reused across calls."""
    with LocalIssuer(algorithms=("RS256",)) as issuer:
        downstream = UvicornServer(fastapi_app(issuer.guard(introspection=False)))
        with downstream:
            outbound = ClientCredentialsAuth(issuer.client_id, issuer.client_secret, issuer=issuer.issuer, scope="read")
            app = create_app(
                issuer.guard(audience="https://reports.test"), downstream_url=downstream.url, outbound=outbound
            )
            front = UvicornServer(app)
            front.server.config.lifespan = "on"
            with front:
                token = issuer.issue(audience="https://reports.test", scope="reports:read")
                for _ in range(3):
                    response = httpx.get(f"{front.url}/report", headers={"Authorization": f"Bearer {token}"})
                    assert response.status_code == 200, response.text
                    assert response.json()["downstream_status"] == 200
                assert httpx.get(f"{front.url}/report").status_code == 401
            assert len(issuer.token_requests) == 1
