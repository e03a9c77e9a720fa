"""A real uvicorn server whose shutdown closes the guard's async HTTP client on its own loop.

A guard keeps one ``httpx.AsyncClient`` per event loop; uvicorn's loop ends
with the server, so the client must be closed before that (an app does it in
its lifespan), or its keep-alive sockets are left for the garbage collector.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from tokenguard import TokenGuard

from .conftest import UvicornServer


def closing_guard(app: ASGIApp, guard: TokenGuard) -> ASGIApp:
    """``app`` with an ASGI lifespan that awaits ``guard.aclose()`` at shutdown."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await guard.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    return wrapped


class GuardedServer(UvicornServer):
    """:class:`UvicornServer` with the lifespan on, closing ``guard`` at shutdown."""

    def __init__(self, app: Any, guard: TokenGuard) -> None:
        super().__init__(closing_guard(app, guard))
        self.server.config.lifespan = "on"
