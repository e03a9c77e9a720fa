"""OAuth 2.0 Protected Resource Metadata (RFC 9728), built and located.

No I/O, no framework imports. The guard knows what goes in the document (its
issuers, the scopes its routes require, how tokens may be sent, DPoP); the
adapters serve it at ``/.well-known/oauth-protected-resource`` and at the
path-suffixed form for resources not at the root (RFC 9728 §3.1), and every
401/403 challenge points at it with ``resource_metadata`` (§5.1).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigurationError

__all__ = ["WELL_KNOWN", "ProtectedResourceMetadata", "metadata_paths", "metadata_url"]

WELL_KNOWN = "/.well-known/oauth-protected-resource"


def _check_resource(resource: str) -> tuple[str, str, str]:
    # RFC 9728 §2: the resource identifier is an https URL with no fragment
    # (http allowed for loopback development), and RFC 8707 §2 no query.
    parts = urlsplit(resource)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.fragment or parts.query:
        raise ConfigurationError(f"resource must be an absolute https URL without query or fragment; got {resource!r}")
    return parts.scheme, parts.netloc, parts.path.rstrip("/")


def metadata_url(resource: str) -> str:
    """The metadata URL for ``resource`` (RFC 9728 §3.1: well-known inserted before the path)."""
    scheme, netloc, path = _check_resource(resource)
    return f"{scheme}://{netloc}{WELL_KNOWN}{path}"


def metadata_paths(resource: str) -> tuple[str, ...]:
    """Request paths at which the document is served: the suffixed form, and the bare one."""
    _, _, path = _check_resource(resource)
    return (WELL_KNOWN + path, WELL_KNOWN) if path else (WELL_KNOWN,)


@dataclass(frozen=True, slots=True)
class ProtectedResourceMetadata:
    """The RFC 9728 §2 document of one protected resource.

    Args:
        resource: the resource identifier (RFC 8707 canonical URI).
        authorization_servers: issuer identifiers of the servers whose tokens are accepted.
        scopes_supported: scopes the routes require.
        bearer_methods_supported: ``header``, ``body``, ``query`` (RFC 9728 §2).
        dpop_signing_alg_values_supported: DPoP proof algorithms, when DPoP is on.
        dpop_bound_access_tokens_required: whether DPoP-bound tokens are required.
        tls_client_certificate_bound_access_tokens: RFC 8705 binding in use.
        resource_name: a human-readable name.
    """

    resource: str
    authorization_servers: tuple[str, ...] = ()
    scopes_supported: tuple[str, ...] = ()
    bearer_methods_supported: tuple[str, ...] = ("header",)
    dpop_signing_alg_values_supported: tuple[str, ...] = ()
    dpop_bound_access_tokens_required: bool = False
    tls_client_certificate_bound_access_tokens: bool = False
    resource_name: str | None = None

    def __post_init__(self) -> None:
        _check_resource(self.resource)
        for name in (
            "authorization_servers",
            "scopes_supported",
            "bearer_methods_supported",
            "dpop_signing_alg_values_supported",
        ):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ConfigurationError(f"{name} must be a sequence, not a string")
            object.__setattr__(self, name, tuple(value))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object to serve; empty members are left out (RFC 9728 §2: all OPTIONAL but ``resource``)."""
        document: dict[str, Any] = {"resource": self.resource}
        if self.authorization_servers:
            document["authorization_servers"] = list(self.authorization_servers)
        if self.scopes_supported:
            document["scopes_supported"] = sorted(self.scopes_supported)
        document["bearer_methods_supported"] = list(self.bearer_methods_supported)
        if self.dpop_signing_alg_values_supported:
            document["dpop_signing_alg_values_supported"] = list(self.dpop_signing_alg_values_supported)
        document["dpop_bound_access_tokens_required"] = self.dpop_bound_access_tokens_required
        if self.tls_client_certificate_bound_access_tokens:
            document["tls_client_certificate_bound_access_tokens"] = True
        if self.resource_name:
            document["resource_name"] = self.resource_name
        return document


def scopes_of(requirements: Iterable[Iterable[str]]) -> tuple[str, ...]:
    """Every scope named by any route requirement, sorted and unique."""
    return tuple(sorted({scope for requirement in requirements for scope in requirement}))
