"""The guard's sender-constraint and resource settings, normalised and described.

No I/O. Turns the guard's ``dpop=``, ``mtls=`` and ``trusted_proxies=``
arguments into settings objects (rejecting wrong types at construction), and
builds the RFC 9728 document from the guard's configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from .claims import TokenClaims, check_not_sender_constrained
from .dpop import DPoPSettings
from .errors import ConfigurationError, InvalidToken
from .forwarded import TrustedProxies
from .mtls import MTLSSettings
from .resource_metadata import ProtectedResourceMetadata

if TYPE_CHECKING:
    from ._effects import Flow
    from ._guardlike import GuardLike as TokenGuard
    from .introspection import Introspection
    from .issuer import IssuerRuntime
    from .keys import KeySet

__all__ = ["is_sender_constrained", "metadata_document", "sender_settings"]


def sender_settings(
    dpop: object, mtls: object, trusted_proxies: object
) -> tuple[DPoPSettings | None, MTLSSettings | None, TrustedProxies | None]:
    """Normalise the guard's ``dpop``, ``mtls`` and ``trusted_proxies`` arguments.

    Raises:
        ConfigurationError: a value of the wrong type or an unknown DPoP mode.
    """
    dpop_settings: DPoPSettings | None
    if dpop is None or isinstance(dpop, DPoPSettings):
        dpop_settings = dpop
    elif isinstance(dpop, str):
        dpop_settings = DPoPSettings(mode=dpop)  # type: ignore[arg-type]  # checked in __post_init__
    else:
        raise ConfigurationError("dpop must be a DPoPSettings or one of 'disabled', 'allowed', 'required'")
    mtls_settings: MTLSSettings | None
    if mtls is None or mtls is False:
        mtls_settings = None
    elif mtls is True:
        mtls_settings = MTLSSettings()
    elif isinstance(mtls, MTLSSettings):
        mtls_settings = mtls
    else:
        raise ConfigurationError("mtls must be an MTLSSettings, True or False")
    if trusted_proxies is not None and not isinstance(trusted_proxies, TrustedProxies):
        raise ConfigurationError("trusted_proxies must be a TrustedProxies")
    return dpop_settings, mtls_settings, trusted_proxies


class _SenderSettings(Protocol):
    """What :func:`is_sender_constrained` reads: a guard's, or its assembly's while it is built."""

    @property
    def dpop(self) -> DPoPSettings | None: ...

    @property
    def mtls(self) -> MTLSSettings | None: ...


def is_sender_constrained(guard: _SenderSettings) -> bool:
    """Whether requests must be judged as a whole (DPoP or mTLS configured), not by the token alone."""
    return (guard.dpop is not None and guard.dpop.enabled) or guard.mtls is not None


#: Set by request_auth while it verifies a token whose proof and certificate it checks itself.
judged_with_request: ContextVar[bool] = ContextVar("tokenguard_judged_with_request", default=False)


def check_direct_verify(guard: TokenGuard, claims: TokenClaims) -> None:
    """Judge the claims of a :meth:`TokenGuard.verify` call made outside :func:`verify_request`.

    With DPoP or mTLS configured the guard admits ``cnf``-bound tokens, since
    request_auth checks their proof and certificate. A direct call (the
    Django and DRF adapters, the MCP verifiers, application code) has neither,
    so it judges the token as a plain Bearer token with no proof and no
    certificate: a bound token is refused (RFC 9449 §7.2 downgrade, RFC 8705
    §3), and so is every token when DPoP or certificate binding is required.

    Raises:
        InvalidToken: the token cannot be accepted without its request.
    """
    if judged_with_request.get():
        return
    if "cnf" in claims:
        check_not_sender_constrained(claims.get("cnf"))
    dpop = guard.dpop
    if dpop is not None and dpop.mode == "required":
        raise InvalidToken("DPoP-bound tokens are required")
    if guard.mtls is not None and guard.mtls.required:
        raise InvalidToken("the token is not certificate-bound")


def metadata_document(guard: TokenGuard) -> dict[str, Any]:
    """The guard's RFC 9728 document.

    Raises:
        ConfigurationError: the guard was built without ``resource``.
    """
    if guard.resource is None:
        raise ConfigurationError("protected-resource metadata needs resource= on the guard")
    servers: list[str] = list(guard._issuers)
    introspection = guard._introspection
    if introspection is not None and introspection.issuer and introspection.issuer not in servers:
        servers.append(introspection.issuer)
    methods = ["header"]
    if guard.allow_form_token:
        methods.append("body")
    if guard.allow_query_token:
        methods.append("query")
    dpop = guard.dpop if guard.dpop is not None and guard.dpop.enabled else None
    return ProtectedResourceMetadata(
        resource=guard.resource,
        authorization_servers=tuple(servers),
        scopes_supported=tuple(sorted(guard.route_scopes)),
        bearer_methods_supported=tuple(methods),
        dpop_signing_alg_values_supported=dpop.algorithms if dpop is not None else (),
        dpop_bound_access_tokens_required=dpop is not None and dpop.mode == "required",
        tls_client_certificate_bound_access_tokens=guard.mtls is not None,
        resource_name=guard.resource_name,
    ).to_dict()


def metadata_for_path(
    guard: TokenGuard, method: str, path: str
) -> tuple[int, dict[str, Any], list[tuple[str, str]]] | None:
    """The response for a request of the RFC 9728 document, or ``None`` for any other path.

    Public (no token needed), cacheable for an hour, readable cross-origin so
    browser-based clients (MCP inspectors) can discover the authorization server.
    """
    if guard.resource is None or method not in ("GET", "HEAD"):
        return None
    from .resource_metadata import metadata_paths

    if path not in metadata_paths(guard.resource):
        return None
    headers = [("Cache-Control", "public, max-age=3600"), ("Access-Control-Allow-Origin", "*")]
    return 200, metadata_document(guard), headers


def introspection_keys_flow(
    introspection: Introspection, issuers: Mapping[str, IssuerRuntime]
) -> Callable[[str | None, float], Flow[KeySet]]:
    """Where RFC 9701 signed introspection answers find their keys: the issuer's JWKS.

    Raises:
        ConfigurationError: ``issuer`` is not one of the guard's JWT issuers.
    """
    runtime = issuers.get(introspection.issuer or "")
    if runtime is None:
        raise ConfigurationError("signed_answers needs the introspection issuer configured as a JWT issuer")
    jwks = runtime.jwks
    if jwks is not None:
        return jwks.keys_flow
    static = runtime.static
    assert static is not None

    def static_keys(kid: str | None, now: float) -> Flow[KeySet]:
        return static
        yield  # a generator that performs no effect

    return static_keys
