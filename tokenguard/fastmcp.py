"""A FastMCP ``TokenVerifier`` backed by a :class:`~tokenguard.TokenGuard`.

Use it where FastMCP takes an auth provider::

    from fastmcp import FastMCP
    from tokenguard.fastmcp import GuardTokenVerifier
    from tokenguard.mcp import mcp_guard

    guard = mcp_guard("https://idp.example.com", "https://mcp.example.com/mcp", scopes=["mcp:tools"])
    mcp = FastMCP("tools", auth=GuardTokenVerifier(guard, base_url="https://mcp.example.com"))

Verification (keys, introspection, caching, DPoP-bound tokens refused as
Bearer) is the guard's; FastMCP renders the HTTP answers. For tokenguard's own
RFC 6750 / RFC 9728 answers, wrap FastMCP's ``http_app()`` with
:func:`tokenguard.mcp.protect_mcp` instead. Needs the ``fastmcp`` extra.
"""

from __future__ import annotations

from typing import Any

from fastmcp.server.auth import AccessToken, TokenVerifier

from .guard import TokenGuard
from .mcp import verified_token_fields

__all__ = ["GuardTokenVerifier"]


class GuardTokenVerifier(TokenVerifier):
    """FastMCP's ``TokenVerifier``, answered by ``guard``.

    Args:
        guard: the guard; its audience should be the server's resource URI.
        required_scopes / base_url / resource_base_url: as for FastMCP's ``TokenVerifier``.

    Invalid tokens give ``None``; an unreachable authorization server raises
    :class:`~tokenguard.ServiceUnavailable` (never a 401 for a good token).
    """

    def __init__(self, guard: TokenGuard, **options: Any) -> None:
        super().__init__(**options)
        self.guard = guard

    async def verify_token(self, token: str) -> AccessToken | None:
        """Verify ``token``; its claims become FastMCP's ``AccessToken``."""
        fields = await verified_token_fields(self.guard, token)
        return AccessToken(**fields) if fields is not None else None
