"""Reading an answer no larger than a bound, for the token clients.

A token endpoint answers a few KiB. One that declares or streams more is
refused at the bound, and the connection dropped, before it fills memory.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

__all__ = ["read_async", "read_sync"]


def _declared_over(response: httpx.Response, limit: int) -> bool:
    declared = response.headers.get("content-length", "")
    return declared.isdigit() and int(declared) > limit


def read_sync(response: httpx.Response, limit: int, too_large: Callable[[httpx.Response], Exception]) -> bytes:
    """The body of a streamed ``response``; raises ``too_large(response)`` past ``limit`` bytes."""
    if _declared_over(response, limit):
        raise too_large(response)
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > limit:
            raise too_large(response)
    return bytes(body)


async def read_async(response: httpx.Response, limit: int, too_large: Callable[[httpx.Response], Exception]) -> bytes:
    """Async twin of :func:`read_sync`."""
    if _declared_over(response, limit):
        raise too_large(response)
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise too_large(response)
    return bytes(body)
