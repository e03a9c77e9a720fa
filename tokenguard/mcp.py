"""MCP servers over Streamable HTTP: a guard preset, an ASGI gate, and a ``TokenVerifier`` for the ``mcp`` SDK.

The Model Context Protocol's authorization rules (2025-06-18 and later) are
OAuth resource-server rules with a few musts:

* the server's canonical URI is the token audience (RFC 8707 resource
  indicators): a token for another server is refused, never passed through;
* tokens only in the ``Authorization`` header, never in the query string;
* 401 carries ``resource_metadata`` (RFC 9728 §5.1) and the needed ``scope``,
  and the server publishes its protected-resource metadata;
* 403 ``insufficient_scope`` lists every scope needed.

:func:`mcp_guard` builds a guard configured so; :func:`protect_mcp` wraps any
MCP ASGI app (``MCPServer.streamable_http_app()``, FastMCP's ``http_app()``)
so that tokenguard answers all of the above. :class:`MCPTokenVerifier` plugs
the same guard into the SDK's own auth (``MCPServer(token_verifier=...)``) for
applications that prefer it; the SDK then renders the errors.

This module imports ``mcp`` (the ``mcp`` extra) only for :class:`MCPTokenVerifier`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from .claims import TokenClaims
from .errors import ConfigurationError, MissingToken, ServiceUnavailable, TokenError
from .guard import TokenGuard
from .scopes import ScopeRequirement
from .starlette import TokenGuardMiddleware, error_response

if TYPE_CHECKING:
    from mcp.server.auth.provider import AccessToken

__all__ = ["MCPTokenVerifier", "mcp_guard", "protect_mcp"]


def mcp_guard(issuer: str, resource: str, *, scopes: Sequence[str] = (), **options: Any) -> TokenGuard:
    """A guard for an MCP server: audience = the server's canonical URI, header-only tokens.

    Args:
        issuer: the authorization server (discovered as for :meth:`TokenGuard.from_issuer`).
        resource: the MCP server's canonical URI, e.g. ``https://mcp.example.com/mcp``
            (RFC 8707 §2; the MCP spec's "canonical server URI"). Tokens must
            name it in ``aud``; the RFC 9728 document is served for it.
        scopes: the scopes every request needs (advertised in ``scopes_supported``
            and in 401/403 challenges).
        options: further :meth:`TokenGuard.from_issuer` arguments (``dpop=``,
            ``client_id=`` for introspection, ``cache=``...).

    Raises:
        ConfigurationError: a bare string for ``scopes``, query/form tokens
            requested (MCP forbids tokens in the URI), or a bad ``resource``.
    """
    if isinstance(scopes, str):
        raise ConfigurationError('scopes must be a sequence, e.g. ["mcp:tools"], not a string')
    for name in ("allow_query_token", "allow_form_token"):
        if options.get(name):
            # MCP authorization §2.6.1: "Access tokens MUST NOT be included in the URI query string".
            raise ConfigurationError(f"{name} is not allowed for MCP servers: tokens go in the Authorization header")
    if options.get("audience") not in (None, resource):
        raise ConfigurationError("audience is the MCP server's resource URI; pass resource= only")
    options.pop("audience", None)
    guard = TokenGuard.from_issuer(issuer, audience=resource, resource=resource, **options)
    guard.declare_scopes(*scopes)
    return guard


class _MissingTokenWithScope(MissingToken):
    """401 without an error code that still names the scope needed (MCP authorization §2.6.2)."""

    def __init__(self, scopes: tuple[str, ...]) -> None:
        super().__init__()
        self.scopes = scopes

    def _challenge_scope(self) -> tuple[str, ...]:
        return self.scopes


class _ScopeGate:
    """Inside :class:`TokenGuardMiddleware`: no token → 401 with scope; too few scopes → 403."""

    def __init__(self, app: ASGIApp, guard: TokenGuard, scopes: tuple[str, ...]) -> None:
        self.app = app
        self.guard = guard
        self.requirement = ScopeRequirement(scopes)
        self.scopes = scopes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        claims: TokenClaims | None = scope.get("tokenguard")
        try:
            if claims is None:
                raise _MissingTokenWithScope(self.scopes)
            self.requirement.check(claims.scopes)
        except TokenError as error:
            from .request_auth import VERDICT_KEY
            from .route_policy import on_scheme_used

            on_scheme_used(error, scope.get(VERDICT_KEY))  # RFC 9449 §7.1: 403 on the DPoP challenge
            await error_response(self.guard, error)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def protect_mcp(app: ASGIApp, guard: TokenGuard, *, scopes: Sequence[str] | None = None) -> ASGIApp:
    """Wrap an MCP Streamable HTTP ASGI app with the guard.

    Every request needs a valid token for the server's resource and all of
    ``scopes`` (default: every scope the guard advertises, i.e. those given to
    :func:`mcp_guard`). The RFC 9728
    document is served at its well-known URL; lifespan events pass through, so
    the SDK's session manager starts as usual.

    Raises:
        ConfigurationError: the guard has no ``resource`` (use :func:`mcp_guard`).
    """
    if guard.resource is None:
        raise ConfigurationError("protect_mcp needs a guard with resource= (see mcp_guard)")
    if isinstance(scopes, str):
        raise ConfigurationError("scopes must be a sequence, not a string")
    needed = tuple(scopes) if scopes is not None else tuple(sorted(guard.route_scopes))
    guard.declare_scopes(*needed)
    gate = _ScopeGate(app, guard, needed)
    return TokenGuardMiddleware(gate, guard, protect=False, public_paths=())


class MCPTokenVerifier:
    """The ``mcp`` SDK's ``TokenVerifier`` protocol, answered by a :class:`TokenGuard`.

    Use as ``MCPServer(token_verifier=MCPTokenVerifier(guard), auth=AuthSettings(...))``.
    Invalid tokens give ``None`` (the SDK answers 401). An unreachable
    authorization server raises :class:`~tokenguard.ServiceUnavailable` rather
    than ``None``: a 401 would make clients discard good tokens.

    Args:
        guard: the guard; its audience should be the server's resource URI.
    """

    def __init__(self, guard: TokenGuard) -> None:
        self.guard = guard

    async def verify_token(self, token: str) -> AccessToken | None:
        """Verify ``token``; its claims become the SDK's ``AccessToken``."""
        from mcp.server.auth.provider import AccessToken

        try:
            claims = await self.guard.verify(token)
        except ServiceUnavailable:
            raise
        except TokenError:
            return None
        return AccessToken(**access_token_fields(token, claims, self.guard.resource))


def access_token_fields(token: str, claims: TokenClaims, resource: str | None) -> dict[str, Any]:
    """The SDK ``AccessToken`` fields for verified ``claims`` (shared with the fastmcp adapter)."""
    expires = claims.exp
    audience = claims.audience
    matched = resource if resource is not None and resource in audience else (audience[0] if audience else None)
    return {
        "token": token,
        "client_id": claims.client_id or claims.subject or "",
        "scopes": sorted(claims.scopes),
        "expires_at": int(expires) if expires is not None else None,
        "resource": matched,
        "subject": claims.subject,
        "claims": claims.to_dict(),
    }
