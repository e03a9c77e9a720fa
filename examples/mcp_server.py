"""An MCP server over Streamable HTTP, protected by tokenguard.

Run it against any OAuth authorization server that issues tokens for the
server's URI (RFC 8707 resource indicators)::

    TOKENGUARD_ISSUER=https://idp.example.com \\
    MCP_RESOURCE=http://127.0.0.1:8000/mcp \\
    uvicorn examples.mcp_server:app

What clients see:

* ``GET /.well-known/oauth-protected-resource/mcp``: the RFC 9728 document
  naming the authorization server and the ``mcp:tools`` scope;
* a request without a token: 401 with ``resource_metadata`` and ``scope``;
* a token for another server, expired or forged: 401 ``invalid_token``;
* a token without ``mcp:tools``: 403 ``insufficient_scope``;
* with a good token, the ``add`` and ``whoami`` tools.
"""

from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp

from tokenguard import TokenGuard
from tokenguard.mcp import mcp_guard, protect_mcp

SCOPES = ("mcp:tools",)


def create_app(guard: TokenGuard) -> ASGIApp:
    """The MCP server's ASGI app, every request checked by ``guard``."""
    server: MCPServer = MCPServer("tokenguard-example")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @server.tool()
    def whoami() -> str:
        """The client the token was issued to (the SDK's request context carries no token here)."""
        return "authenticated"

    # stateless: each POST stands alone, so any worker can answer it.
    return protect_mcp(server.streamable_http_app(stateless_http=True, json_response=True), guard, scopes=SCOPES)


def _app_from_environment() -> ASGIApp | None:
    issuer = os.environ.get("TOKENGUARD_ISSUER")
    resource = os.environ.get("MCP_RESOURCE")
    if not issuer or not resource:
        return None
    return create_app(mcp_guard(issuer, resource, scopes=SCOPES))


app = _app_from_environment()
