"""Reading an answer no larger than a bound, for the token clients.

A token endpoint answers a few KiB. One that declares or streams more is
refused at the bound, and the connection dropped, before it fills memory.

The bound holds for the answer as sent and as inflated: httpx inflates each
read from the socket (up to 64 KiB) at once, so a gzip answer of 64 KiB
would become one 64 MiB chunk before any check could see it. A ``gzip`` or
``deflate`` answer is therefore read raw and inflated here, never past the
bound. Other codings (``br``, ``zstd``: decoded by httpx only when their
optional packages are installed) are left to httpx.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import httpx

__all__ = ["read_async", "read_sync"]

#: Content-codings inflated here, with their zlib window bits.
_INFLATED = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


def _declared_over(response: httpx.Response, limit: int) -> bool:
    declared = response.headers.get("content-length", "")
    return declared.isdigit() and int(declared) > limit


def _coding(response: httpx.Response) -> str | None:
    """``identity``, a coding of :data:`_INFLATED`, or ``None``: httpx decodes it."""
    coding = response.headers.get("content-encoding", "").strip().lower()
    if coding in ("", "identity"):
        return "identity"
    return coding if coding in _INFLATED else None


class _Inflater:
    """Inflates raw chunks into ``body``, never past ``limit`` bytes."""

    def __init__(
        self, response: httpx.Response, coding: str, limit: int, too_large: Callable[[httpx.Response], Exception]
    ) -> None:
        self.response = response
        self.coding = coding
        self.limit = limit
        self.too_large = too_large
        self.body = bytearray()
        self.raw = 0
        self.started = False
        self.inflater = zlib.decompressobj(_INFLATED[coding]) if coding != "identity" else None

    def feed(self, chunk: bytes) -> None:
        self.raw += len(chunk)
        if self.raw > self.limit:
            raise self.too_large(self.response)
        if self.inflater is None:
            self.body += chunk
        else:
            room = self.limit - len(self.body)
            try:
                # At most room + 1 bytes: one past the bound is enough to refuse.
                self.body += self.inflater.decompress(chunk, room + 1)
            except zlib.error as exc:
                if self.coding != "deflate" or self.started:
                    raise httpx.DecodingError(str(exc), request=self.response.request) from exc
                # As httpx: "deflate" sent without its zlib wrapper (a raw deflate stream).
                self.inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                self.raw -= len(chunk)
                self.feed(chunk)
                return
        self.started = True
        if len(self.body) > self.limit:
            raise self.too_large(self.response)

    def finish(self) -> bytes:
        if self.inflater is not None:
            try:
                self.body += self.inflater.flush()
            except zlib.error as exc:
                raise httpx.DecodingError(str(exc), request=self.response.request) from exc
            if len(self.body) > self.limit:
                raise self.too_large(self.response)
        return bytes(self.body)


def read_sync(response: httpx.Response, limit: int, too_large: Callable[[httpx.Response], Exception]) -> bytes:
    """The body of a streamed ``response``; raises ``too_large(response)`` past ``limit`` bytes."""
    if _declared_over(response, limit):
        raise too_large(response)
    coding = _coding(response)
    if coding is not None and not response.is_stream_consumed:  # consumed: a transport gave it whole
        inflater = _Inflater(response, coding, limit, too_large)
        for chunk in response.iter_raw():
            inflater.feed(chunk)
        return inflater.finish()
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
    coding = _coding(response)
    if coding is not None and not response.is_stream_consumed:  # consumed: a transport gave it whole
        inflater = _Inflater(response, coding, limit, too_large)
        async for chunk in response.aiter_raw():
            inflater.feed(chunk)
        return inflater.finish()
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise too_large(response)
    return bytes(body)
