"""Run one verification the blocking way or the asyncio way: tests parametrised over both call them alike."""

from __future__ import annotations

import asyncio

from tokenguard import TokenClaims, TokenGuard


def verify(guard: TokenGuard, token: str, flavour: str) -> TokenClaims:
    """``guard.verify_sync(token)`` for ``"sync"``; else ``await guard.verify(token)`` in a fresh event loop,
    closing the loop's async client after (each ``asyncio.run`` is a new loop)."""
    if flavour == "sync":
        return guard.verify_sync(token)

    async def run() -> TokenClaims:
        try:
            return await guard.verify(token)
        finally:
            await guard.aclose()

    return asyncio.run(run())
