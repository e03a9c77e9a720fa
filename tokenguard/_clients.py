"""The HTTP clients of one guard: built on first need, one async pool per event loop.

A guard with static keys never builds a client (or its TLS context). Clients
the application brought are used as they are and never closed here.
"""

from __future__ import annotations

import asyncio
import threading
import weakref

import httpx

__all__ = ["DEFAULT_TIMEOUT", "HttpClients"]

#: Upstream timeouts: a provider that has not connected in 2 s is down for
#: practical purposes (Spring's NimbusJwtDecoder: 5 s for both; Duende: 100 s,
#: HttpClient's default, which keeps requests hanging through an outage).
DEFAULT_TIMEOUT = httpx.Timeout(5.0, connect=2.0)


class HttpClients:
    """A guard's ``httpx`` clients and their lifecycle.

    Args:
        timeout: the per-operation timeouts of the clients built here.
        client / async_client: clients the application brought, if any.
    """

    def __init__(
        self, timeout: httpx.Timeout, client: httpx.Client | None, async_client: httpx.AsyncClient | None
    ) -> None:
        self.timeout = timeout
        self._own_client = client is None
        self._client = client
        self._lock = threading.Lock()
        self._given_async_client = async_client
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    def sync(self) -> httpx.Client:
        """The blocking client (built on first call)."""
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = httpx.Client(timeout=self.timeout, follow_redirects=False)
                client = self._client
        return client

    def async_(self) -> httpx.AsyncClient:
        """The running event loop's async client (built on first call in that loop)."""
        if self._given_async_client is not None:
            return self._given_async_client
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            # One pool per event loop: connections cannot cross loops.
            client = self._async_clients[loop] = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        return client

    def close(self) -> None:
        """Close the blocking client, if it was built here."""
        if self._own_client and self._client is not None:
            self._client.close()
            self._client = None

    async def aclose(self) -> None:
        """Close this event loop's async client, if it was built here."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - always called from a loop
            return
        client = self._async_clients.pop(loop, None)
        if client is not None:
            await client.aclose()
