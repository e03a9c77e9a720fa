"""Certificate-bound access tokens (RFC 8705 §3), checked at the resource server.

No I/O, no framework imports. The client certificate comes from the TLS layer
that terminated the connection: the ASGI TLS extension
(``scope["extensions"]["tls"]["client_cert_chain"]``), the WSGI environ
(``SSL_CLIENT_CERT``, as mod_ssl and gunicorn set it), or a header written by
a reverse proxy that the application trusts explicitly
(:class:`~tokenguard.forwarded.TrustedProxies`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .errors import ConfigurationError, InvalidToken

__all__ = ["MTLSSettings", "certificate_thumbprint", "check_certificate_binding", "load_certificate"]

#: A PEM certificate chain larger than this is not looked at.
MAX_CERTIFICATE_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class MTLSSettings:
    """Enables RFC 8705 certificate binding.

    Args:
        required: refuse tokens that are not certificate-bound (``False``:
            bound tokens are checked, unbound ones pass as Bearer).
    """

    required: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.required, bool):
            raise ConfigurationError("required must be True or False")


def load_certificate(value: str | bytes) -> bytes | None:
    """The DER bytes of a PEM (or URL-encoded PEM, or DER) certificate; ``None`` if unreadable.

    Proxies send the leaf certificate URL-encoded (nginx ``$ssl_client_escaped_cert``,
    Envoy ``x-forwarded-client-cert`` ``Cert="..."``) or as raw PEM.
    """
    if isinstance(value, str):
        if len(value) > 3 * MAX_CERTIFICATE_BYTES:
            return None
        text = unquote(value) if "%" in value else value
        data = text.encode("latin-1", "replace")
    else:
        data = value
    if len(data) > MAX_CERTIFICATE_BYTES:
        return None
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            certificate = x509.load_pem_x509_certificate(data)
        else:
            certificate = x509.load_der_x509_certificate(data)
        return certificate.public_bytes(Encoding.DER)
    except Exception:  # noqa: BLE001 - any unreadable certificate counts as none
        return None


def certificate_thumbprint(der: bytes) -> str:
    """``x5t#S256`` (RFC 8705 §3.1): base64url SHA-256 of the DER certificate."""
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


def asgi_client_certificate(scope: Mapping[str, Any]) -> bytes | None:
    """The client certificate from the ASGI TLS extension, as DER, or ``None``."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or ()
    if not chain:
        return None
    leaf = chain[0]
    return load_certificate(leaf) if isinstance(leaf, str | bytes) else None


def wsgi_client_certificate(environ: Mapping[str, Any]) -> bytes | None:
    """The client certificate from the WSGI environ (``SSL_CLIENT_CERT``, PEM), or ``None``."""
    value = environ.get("SSL_CLIENT_CERT")
    return load_certificate(value) if isinstance(value, str | bytes) and value else None


def bound_certificate(cnf: object) -> str | None:
    """The ``x5t#S256`` a token's ``cnf`` claim binds it to, if any."""
    if isinstance(cnf, Mapping):
        value = cnf.get("x5t#S256")
        if value is not None:
            if not isinstance(value, str) or not value:
                raise InvalidToken("malformed cnf claim")
            return value
    return None


def check_certificate_binding(cnf: object, certificate: bytes | None, settings: MTLSSettings) -> str | None:
    """Check a token's certificate binding against the presented certificate.

    Returns:
        The thumbprint when the token is certificate-bound and matched,
        ``None`` when the token is unbound (and binding is not required).

    Raises:
        InvalidToken: bound but no or another certificate (RFC 8705 §3:
            "the protected resource MUST NOT accept the token"), or unbound
            while ``required``.
    """
    expected = bound_certificate(cnf)
    if expected is None:
        if settings.required:
            raise InvalidToken("the token is not certificate-bound")
        return None
    if certificate is None:
        raise InvalidToken("the token is certificate-bound but no client certificate was presented")
    presented = certificate_thumbprint(certificate)
    if not hmac.compare_digest(presented.encode(), expected.encode("ascii", "replace")):
        raise InvalidToken("the token is bound to another certificate")
    return presented
