"""Interop with a real, certified OpenID provider: node ``oidc-provider`` 8.x on loopback.

Tokens are minted with the client-credentials grant: JWT access tokens
(``typ: at+jwt``) for the resource indicator https://api.test/ (RFC 8707),
opaque tokens when no resource is requested. They are driven through both
adapter families (FastAPI under uvicorn, Flask under a threaded WSGI server).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tokenguard import InvalidToken, TokenGuard

from .conftest import UvicornServer, WSGIServer, free_port, in_ci
from .helpers import Clock
from .test_adapters import fastapi_app, flask_app

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parent / "oidc"
RESOURCE = "https://api.test/"
CLIENTS = {"client_secret_basic": ("rs-basic", "rs-basic-secret"), "client_secret_post": ("rs-post", "rs-post-secret")}


def _private_jwk(kid: str) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk: dict[str, Any] = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(key))
    jwk.pop("key_ops", None)
    jwk.update(kid=kid, use="sig", alg="RS256")
    return jwk


class OIDCProvider:
    """The node process, restartable on the same port with a new signing key."""

    def __init__(self) -> None:
        node = shutil.which("node")
        if node is None or not (FIXTURE / "node_modules" / "oidc-provider").exists():
            reason = "node or tests/oidc/node_modules missing (scripts/test runs npm ci there)"
            if in_ci():
                pytest.fail(reason)
            pytest.skip(reason)
        self.node = node
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.keys = [_private_jwk("key-1")]
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        env = {**os.environ, "PORT": str(self.port), "JWKS": json.dumps({"keys": self.keys})}
        self.process = subprocess.Popen(
            [self.node, str(FIXTURE / "provider.mjs")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"oidc-provider did not start: {line!r}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None

    def rotate(self) -> str:
        """Restart with a new first (signing) key; the old key stays published."""
        kid = f"key-{len(self.keys) + 1}"
        self.keys = [_private_jwk(kid), *self.keys]
        self.stop()
        self.start()
        return kid

    def token(self, *, resource: str | None = RESOURCE, scope: str = "read") -> str:
        data = {"grant_type": "client_credentials", "scope": scope}
        if resource is not None:
            data["resource"] = resource
        response = httpx.post(f"{self.issuer}/token", data=data, auth=("app", "app-secret"))
        response.raise_for_status()
        assert response.headers["cache-control"] == "no-store"
        token: str = response.json()["access_token"]
        return token

    def revoke(self, token: str) -> None:
        httpx.post(f"{self.issuer}/token/revocation", data={"token": token}, auth=("app", "app-secret"))

    def guard(self, auth_method: str = "client_secret_basic", **options: Any) -> TokenGuard:
        client_id, secret = CLIENTS[auth_method]
        return TokenGuard.from_issuer(
            self.issuer,
            audience=RESOURCE,
            client_id=client_id,
            client_secret=secret,
            auth_method=auth_method,  # type: ignore[arg-type]
            token_types=("at+jwt",),
            **options,
        )


def test_jwt_access_token_verified_locally(oidc_provider: OIDCProvider) -> None:
    """An at+jwt token for our resource verifies with the provider's published keys."""
    with oidc_provider.guard() as guard:
        claims = guard.verify_sync(oidc_provider.token(scope="read write"))
    assert claims.token_type == "jwt"
    assert claims.issuer == oidc_provider.issuer
    assert claims.audience == (RESOURCE,)
    assert claims.scopes == {"read", "write"}
    assert claims.client_id == "app"


@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
def test_opaque_token_introspected(oidc_provider: OIDCProvider, auth_method: str) -> None:
    """An opaque token is accepted via the provider's introspection, with either client auth."""
    with oidc_provider.guard(auth_method) as guard:
        claims = guard.verify_sync(oidc_provider.token(resource=None, scope="read"))
    assert claims.token_type == "opaque"
    assert claims.scopes == {"read"}
    assert claims.client_id == "app"


def test_revoked_opaque_token(oidc_provider: OIDCProvider) -> None:
    """Revocation is seen once the cache entry lapses, and at once without a cache."""

    clock = Clock()
    token = oidc_provider.token(resource=None)
    with (
        oidc_provider.guard(clock=clock, introspection_cache_ttl=30) as cached,
        oidc_provider.guard(introspection_cache_ttl=0) as uncached,
    ):
        assert cached.verify_sync(token).token_type == "opaque"
        assert uncached.verify_sync(token).token_type == "opaque"
        oidc_provider.revoke(token)
        with pytest.raises(InvalidToken, match="not active"):
            uncached.verify_sync(token)
        assert cached.verify_sync(token)  # still within its 30 s cache entry
        clock.now += 31
        with pytest.raises(InvalidToken, match="not active"):
            cached.verify_sync(token)


def test_wrong_resource_rejected(oidc_provider: OIDCProvider) -> None:
    """A token minted for another resource (audience) is refused."""
    with oidc_provider.guard() as guard, pytest.raises(InvalidToken, match="audience"):
        guard.verify_sync(oidc_provider.token(resource="https://other.test/"))


@pytest.mark.parametrize("stack", ["fastapi", "flask"])
def test_through_both_adapters(oidc_provider: OIDCProvider, stack: str) -> None:
    """JWT and opaque tokens pass; a token without the route's scope gets 403; none gets 401."""
    guard = oidc_provider.guard()
    server: UvicornServer | WSGIServer = (
        UvicornServer(fastapi_app(guard)) if stack == "fastapi" else WSGIServer(flask_app(guard))
    )
    with server, guard:
        for token in (oidc_provider.token(scope="read"), oidc_provider.token(resource=None, scope="read")):
            response = httpx.get(f"{server.url}/books", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, response.text
        response = httpx.get(
            f"{server.url}/write", headers={"Authorization": f"Bearer {oidc_provider.token(scope='read')}"}
        )
        assert response.status_code == 403
        assert 'scope="write"' in response.headers["www-authenticate"]
        assert httpx.get(f"{server.url}/books").status_code == 401


def test_key_rotation_without_restart() -> None:
    """After the provider rotates its signing key, the same guard accepts the new tokens."""
    server = OIDCProvider()
    server.start()
    try:
        with server.guard() as guard:
            assert guard.verify_sync(server.token()).token_type == "jwt"
            new_kid = server.rotate()
            token = server.token()
            assert pyjwt.get_unverified_header(token)["kid"] == new_kid
            assert guard.verify_sync(token).token_type == "jwt"
    finally:
        server.stop()
