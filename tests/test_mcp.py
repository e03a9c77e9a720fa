"""MCP: the example server under uvicorn, tokens from the real oidc-provider, the official ``mcp`` client.

Tokens are issued by node ``oidc-provider`` for the resource indicator
https://mcp.test/mcp (the MCP server's canonical URI, RFC 8707); the client is
the ``mcp`` SDK's own Streamable HTTP client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from examples.mcp_server import create_app
from tokenguard import ConfigurationError, TokenGuard
from tokenguard.challenge import parse_challenges
from tokenguard.mcp import MCPTokenVerifier, mcp_guard

from .conftest import UvicornServer
from .test_oidc_provider import OIDCProvider

pytestmark = pytest.mark.integration

mcp = pytest.importorskip("mcp", reason="the mcp extra is not installed")
httpx2 = pytest.importorskip("httpx2", reason="the mcp SDK's HTTP client is not installed")

RESOURCE = "https://mcp.test/mcp"
METADATA_PATH = "/.well-known/oauth-protected-resource/mcp"


def token(provider: OIDCProvider, scope: str = "mcp:tools", resource: str = RESOURCE) -> str:
    response = httpx.post(
        f"{provider.issuer}/token",
        data={"grant_type": "client_credentials", "scope": scope, "resource": resource},
        auth=("app", "app-secret"),
    )
    response.raise_for_status()
    value: str = response.json()["access_token"]
    return value


def guard_for(provider: OIDCProvider, **options: Any) -> TokenGuard:
    client = httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0))
    return mcp_guard(provider.issuer, RESOURCE, scopes=["mcp:tools"], async_http_client=client, **options)


def serve(app: Any) -> UvicornServer:
    server = UvicornServer(app)
    server.server.config.lifespan = "on"  # the SDK's session manager runs in the lifespan
    return server


@pytest.fixture
def example(oidc_provider: OIDCProvider) -> Iterator[str]:
    guard = guard_for(oidc_provider)
    with serve(create_app(guard)) as server, guard:
        yield server.url


async def _use_tools(url: str, bearer: str, statuses: list[int] | None = None) -> tuple[list[str], Any]:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def record(response: Any) -> None:
        if statuses is not None:
            statuses.append(response.status_code)

    async with (
        httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {bearer}"}, timeout=10, event_hooks={"response": [record]}
        ) as http,
        streamable_http_client(f"{url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = await session.list_tools()
        result = await session.call_tool("add", {"a": 2, "b": 3})
        return sorted(tool.name for tool in tools.tools), result


def test_official_client_uses_the_tools(oidc_provider: OIDCProvider, example: str) -> None:
    """The mcp SDK client, with a provider token for the server's URI, lists and calls tools."""
    names, result = asyncio.run(_use_tools(example, token(oidc_provider)))
    assert names == ["add", "whoami"]
    assert not result.is_error
    assert result.structured_content == {"result": 5}


def test_official_client_refused_without_valid_token(oidc_provider: OIDCProvider, example: str) -> None:
    """The same client with a token for another resource does not get in."""
    statuses: list[int] = []
    with pytest.raises(Exception, match="unhandled errors"):
        asyncio.run(_use_tools(example, token(oidc_provider, scope="read", resource="https://api.test/"), statuses))
    assert statuses == [401]


def test_protected_resource_metadata_served(oidc_provider: OIDCProvider, example: str) -> None:
    """RFC 9728: public, at the path-suffixed well-known URL, naming the AS and the scopes."""
    for path in (METADATA_PATH, "/.well-known/oauth-protected-resource"):
        response = httpx.get(example + path)
        assert response.status_code == 200
        document = response.json()
        assert document["resource"] == RESOURCE
        assert document["authorization_servers"] == [oidc_provider.issuer]
        assert document["scopes_supported"] == ["mcp:tools"]
        assert document["bearer_methods_supported"] == ["header"]
        assert document["dpop_bound_access_tokens_required"] is False


def test_no_token_401_with_resource_metadata_and_scope(example: str) -> None:
    """MCP authorization: 401 names the metadata URL and the scope to ask for, no error code."""
    response = httpx.post(f"{example}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert response.status_code == 401
    (challenge,) = parse_challenges(response.headers["www-authenticate"])
    assert challenge.error is None
    assert challenge.scope == ("mcp:tools",)
    assert dict(challenge.extra)["resource_metadata"] == "https://mcp.test" + METADATA_PATH
    assert response.headers["cache-control"] == "no-store"


def test_wrong_audience_401(oidc_provider: OIDCProvider, example: str) -> None:
    """A token for another resource is invalid_token (never passed through), with resource_metadata."""
    bearer = token(oidc_provider, scope="read", resource="https://api.test/")
    response = httpx.post(f"{example}/mcp", json={}, headers={"Authorization": f"Bearer {bearer}"})
    assert response.status_code == 401
    (challenge,) = parse_challenges(response.headers["www-authenticate"])
    assert challenge.error == "invalid_token"
    assert "resource_metadata" in dict(challenge.extra)


def test_missing_scope_403_lists_scopes(oidc_provider: OIDCProvider, example: str) -> None:
    """A token for this server without mcp:tools: 403 insufficient_scope listing it, with resource_metadata."""
    bearer = token(oidc_provider, scope="read")
    response = httpx.post(f"{example}/mcp", json={}, headers={"Authorization": f"Bearer {bearer}"})
    assert response.status_code == 403
    (challenge,) = parse_challenges(response.headers["www-authenticate"])
    assert challenge.error == "insufficient_scope"
    assert challenge.scope == ("mcp:tools",)
    assert "resource_metadata" in dict(challenge.extra)


def test_query_token_refused(oidc_provider: OIDCProvider, example: str) -> None:
    """Tokens in the URI are refused (MCP authorization: header only)."""
    response = httpx.post(f"{example}/mcp", params={"access_token": token(oidc_provider)}, json={})
    assert response.status_code == 400


def test_preset_validation(oidc_provider: OIDCProvider) -> None:
    """Query tokens, a bare string of scopes and a second audience are configuration errors."""
    with pytest.raises(ConfigurationError, match="allow_query_token"):
        mcp_guard(oidc_provider.issuer, RESOURCE, allow_query_token=True)
    with pytest.raises(ConfigurationError, match="not a string"):
        mcp_guard(oidc_provider.issuer, RESOURCE, scopes="mcp:tools")
    with pytest.raises(ConfigurationError, match="audience"):
        mcp_guard(oidc_provider.issuer, RESOURCE, audience="https://other.test/")


def test_sdk_token_verifier(oidc_provider: OIDCProvider) -> None:
    """MCPTokenVerifier: the SDK's AccessToken from a good token; None for a token for another server."""
    from mcp.server.auth.provider import AccessToken

    good_token, other_token = token(oidc_provider), token(oidc_provider, "read", "https://api.test/")

    async def run() -> tuple[Any, Any, Any]:
        guard = mcp_guard(oidc_provider.issuer, RESOURCE)
        async with guard:
            verifier = MCPTokenVerifier(guard)
            return (
                await verifier.verify_token(good_token),
                await verifier.verify_token(other_token),
                await verifier.verify_token("garbage"),
            )

    good, other, garbage = asyncio.run(run())
    assert isinstance(good, AccessToken)
    assert good.client_id == "app"
    assert good.scopes == ["mcp:tools"]
    assert good.resource == RESOURCE
    assert good.claims is not None and good.claims["iss"] == oidc_provider.issuer
    assert other is None and garbage is None


def test_fastmcp_token_verifier(oidc_provider: OIDCProvider) -> None:
    """The FastMCP adapter answers like the SDK one, with FastMCP's AccessToken."""
    pytest.importorskip("fastmcp", reason="the fastmcp extra is not installed")
    from fastmcp.server.auth import AccessToken

    from tokenguard.fastmcp import GuardTokenVerifier

    good_token, other_token = token(oidc_provider), token(oidc_provider, "read", "https://api.test/")

    async def run() -> tuple[Any, Any]:
        guard = mcp_guard(oidc_provider.issuer, RESOURCE)
        async with guard:
            verifier = GuardTokenVerifier(guard, base_url="http://127.0.0.1:9", required_scopes=["mcp:tools"])
            return await verifier.verify_token(good_token), await verifier.verify_token(other_token)

    good, other = asyncio.run(run())
    assert isinstance(good, AccessToken)
    assert good.scopes == ["mcp:tools"]
    assert other is None
