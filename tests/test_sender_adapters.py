"""DPoP through the WSGI adapters, and certificate-bound tokens (RFC 8705) through every adapter family.

Bound tokens come from the real oidc-provider: DPoP-bound as in
``test_dpop_oidc.py``; certificate-bound for its client ``mtls-app``, which
binds each token to the certificate the token request presented (the fixture
reads it from a header; it has no TLS listener).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask, jsonify
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tokenguard import TokenGuard, parse_challenges
from tokenguard.flask import FlaskTokenGuard, current_token
from tokenguard.forwarded import TrustedProxies
from tokenguard.mtls import certificate_thumbprint, load_certificate
from tokenguard.request_auth import asgi_request_context, wsgi_request_context
from tokenguard.starlette import TokenGuardMiddleware
from tokenguard.wsgi import CLAIMS_KEY, TokenGuardWSGIMiddleware

from .conftest import UvicornServer, WSGIServer
from .test_dpop_oidc import DPoPClient, make_guard
from .test_oidc_provider import RESOURCE, OIDCProvider

pytestmark = pytest.mark.integration


def certificate_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mtls-app")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def bound_token(provider: OIDCProvider, pem: str) -> str:
    response = httpx.post(
        f"{provider.issuer}/token",
        data={"grant_type": "client_credentials", "scope": "read", "resource": RESOURCE},
        auth=("mtls-app", "mtls-app-secret"),
        headers={"x-client-cert": quote(pem)},
    )
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def flask_app(guard: TokenGuard) -> Flask:
    app = Flask(__name__)
    FlaskTokenGuard(app, guard, protect_all=True)

    @app.get("/books")
    def books() -> Any:
        return jsonify({"sub": current_token.subject})

    return app


def wsgi_app(guard: TokenGuard) -> Callable[..., Any]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(environ[CLAIMS_KEY].subject).encode()]

    return TokenGuardWSGIMiddleware(app, guard)


def starlette_app(guard: TokenGuard) -> Any:
    async def books(request: Request) -> JSONResponse:
        return JSONResponse({"sub": request.state.token.subject})

    return TokenGuardMiddleware(Starlette(routes=[Route("/books", books)]), guard)


def server_for(stack: str, guard: TokenGuard) -> UvicornServer | WSGIServer:
    if stack == "starlette":
        return UvicornServer(starlette_app(guard))
    return WSGIServer(flask_app(guard) if stack == "flask" else wsgi_app(guard))


@pytest.mark.parametrize("stack", ["flask", "wsgi"])
def test_dpop_through_wsgi_adapters(oidc_provider: OIDCProvider, stack: str) -> None:
    """Flask and plain WSGI: a bound token with its proof passes; a replay, a downgrade and a wrong htm do not."""
    guard = oidc_provider.guard(dpop="allowed")
    with server_for(stack, guard) as server, guard:
        client = DPoPClient()
        token = client.token(oidc_provider)
        url = f"{server.url}/books"
        proof = client.proof("GET", url, token)
        headers = {"Authorization": f"DPoP {token}", "DPoP": proof}
        assert httpx.get(url, headers=headers).status_code == 200
        replay = httpx.get(url, headers=headers)
        assert replay.status_code == 401
        assert {c.scheme: c for c in parse_challenges(replay.headers["www-authenticate"])}["DPoP"].error == (
            "invalid_dpop_proof"
        )
        assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 401
        wrong = {"Authorization": f"DPoP {token}", "DPoP": client.proof("POST", url, token)}
        assert httpx.get(url, headers=wrong).status_code == 401


@pytest.mark.parametrize("stack", ["starlette", "flask", "wsgi"])
def test_certificate_bound_token(oidc_provider: OIDCProvider, stack: str) -> None:
    """RFC 8705: the token's certificate from a trusted proxy's header passes; another or none is invalid_token."""
    pem = certificate_pem()
    token = bound_token(oidc_provider, pem)
    proxies = TrustedProxies(("127.0.0.1",), client_cert_header="x-ssl-client-cert")
    guard = make_guard(oidc_provider, mtls=True, trusted_proxies=proxies)
    with server_for(stack, guard) as server, guard:
        url = f"{server.url}/books"
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(url, headers={**auth, "x-ssl-client-cert": quote(pem)}).status_code == 200
        for extra in ({"x-ssl-client-cert": quote(certificate_pem())}, {}, {"x-ssl-client-cert": "garbage"}):
            response = httpx.get(url, headers={**auth, **extra})
            assert response.status_code == 401
            assert response.json()["error"] == "invalid_token"
        # An unbound token is still accepted where binding is not required.
        assert httpx.get(url, headers={"Authorization": f"Bearer {oidc_provider.token()}"}).status_code == 200


def test_certificate_header_from_untrusted_peer_ignored(oidc_provider: OIDCProvider) -> None:
    """The certificate header is believed only from a listed proxy: from anyone else the token is refused."""
    pem = certificate_pem()
    token = bound_token(oidc_provider, pem)
    proxies = TrustedProxies(("10.0.0.0/8",), client_cert_header="x-ssl-client-cert")
    guard = make_guard(oidc_provider, mtls=True, trusted_proxies=proxies)
    with UvicornServer(starlette_app(guard)) as server, guard:
        response = httpx.get(
            f"{server.url}/books", headers={"Authorization": f"Bearer {token}", "x-ssl-client-cert": quote(pem)}
        )
        assert response.status_code == 401


def test_certificate_from_asgi_tls_extension_and_wsgi_environ() -> None:
    """The ASGI TLS extension's chain and the WSGI SSL_CLIENT_CERT variable both yield the DER certificate."""
    pem = certificate_pem()
    der = load_certificate(pem)
    assert der is not None
    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "https",
        "path": "/books",
        "raw_path": b"/books",
        "headers": [(b"host", b"api.test")],
        "client": ("192.0.2.1", 5000),
        "extensions": {"tls": {"client_cert_chain": [pem]}},
    }
    context = asgi_request_context(scope, None)
    assert context.client_certificate == der
    assert context.url == "https://api.test/books"
    environ = {
        "REQUEST_METHOD": "POST",
        "wsgi.url_scheme": "https",
        "HTTP_HOST": "api.test",
        "PATH_INFO": "/books",
        "SSL_CLIENT_CERT": pem,
        "REMOTE_ADDR": "192.0.2.1",
    }
    context = wsgi_request_context(environ, None)
    assert context.client_certificate == der
    assert context.method == "POST"
    assert certificate_thumbprint(der) == certificate_thumbprint(load_certificate(quote(pem)) or b"")


def test_binding_kind_not_configured_is_refused(oidc_provider: OIDCProvider) -> None:
    """A certificate-bound token where only DPoP is on, or a DPoP-bound one where only mTLS is on: invalid_token."""
    pem = certificate_pem()
    cert_token = bound_token(oidc_provider, pem)
    dpop_token = DPoPClient().token(oidc_provider)
    proxies = TrustedProxies(("127.0.0.1",), client_cert_header="x-ssl-client-cert")
    dpop_only = make_guard(oidc_provider, dpop="allowed", trusted_proxies=proxies)
    mtls_only = make_guard(oidc_provider, mtls=True, trusted_proxies=proxies)
    with UvicornServer(starlette_app(dpop_only)) as a, UvicornServer(starlette_app(mtls_only)) as b:
        response = httpx.get(
            f"{a.url}/books", headers={"Authorization": f"Bearer {cert_token}", "x-ssl-client-cert": quote(pem)}
        )
        assert response.status_code == 401
        assert "certificate-bound" in response.json()["error_description"]
        response = httpx.get(f"{b.url}/books", headers={"Authorization": f"Bearer {dpop_token}"})
        assert response.status_code == 401
        assert "DPoP-bound" in response.json()["error_description"]
    dpop_only.close()
    mtls_only.close()
