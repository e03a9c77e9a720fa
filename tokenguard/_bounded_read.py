"""Reading an upstream answer no larger than a bound: metadata, keys, introspection, tokens.

Every upstream document is small (a JWK Set, an introspection answer, a token
answer: a few KiB). One that declares or streams more than its bound is
refused at the bound, and the connection dropped, before it fills memory.

The bound holds for the answer as sent and as inflated: httpx inflates each
read from the socket (up to 64 KiB) at once, so a gzip answer of 64 KiB
would become one 64 MiB chunk before any check could see it. A ``gzip`` or
``deflate`` answer is therefore read raw and inflated here, never past the
bound. Requests offer only those codings (:data:`ACCEPT_ENCODING`), not the
``br``/``zstd`` httpx offers when their packages are installed; an answer in
any other coding is refused as undecodable.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import httpx

from ._logtext import loggable

__all__ = ["ACCEPT_ENCODING", "read_async", "read_sync"]

#: The codings upstream requests offer: those inflated here, under the bound.
ACCEPT_ENCODING = "gzip, deflate"

#: Content-codings inflated here, with their zlib window bits.
_INFLATED = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}


def _declared_over(response: httpx.Response, limit: int) -> bool:
    declared = response.headers.get("content-length", "")
    return declared.isdigit() and int(declared) > limit


def _coding(response: httpx.Response) -> str:
    """``identity`` or a coding of :data:`_INFLATED`.

    ``identity`` and empty members of the list (RFC 9110 §5.6.1) are no
    coding at all: ``identity, gzip`` is gzip, as httpx reads it.

    Raises:
        httpx.DecodingError: any other coding (one not offered, or several stacked).
    """
    header: str = response.headers.get("content-encoding", "")
    codings = [c for c in (m.strip().lower() for m in header.split(",")) if c not in ("", "identity")]
    if not codings:
        return "identity"
    if len(codings) > 1 or codings[0] not in _INFLATED:
        shown = loggable(header.strip().lower(), 40)  # the server's text: it may reach a log line
        raise httpx.DecodingError(f"answer in content-coding {shown}, which was not offered", request=response.request)
    return codings[0]


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
                # Tried once: a body that is not raw deflate either is corrupt.
                self.inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                self.started = True
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


def read_sync(
    response: httpx.Response,
    limit: int,
    too_large: Callable[[httpx.Response], Exception],
    each_chunk: Callable[[], None] | None = None,
) -> bytes:
    """The body of a streamed ``response``, inflated; raises ``too_large(response)`` past ``limit`` bytes.

    ``each_chunk`` is called after every chunk read (a deadline check may raise there).

    Raises:
        httpx.DecodingError: a coding not offered, or a corrupt compressed body.
    """
    if _declared_over(response, limit):
        raise too_large(response)
    coding = _coding(response)
    if response.is_stream_consumed:  # a transport (a test's) gave the body whole, decoded
        return _whole(response, limit, too_large)
    inflater = _Inflater(response, coding, limit, too_large)
    for chunk in response.iter_raw():
        inflater.feed(chunk)
        if each_chunk is not None:
            each_chunk()
    return inflater.finish()


async def read_async(
    response: httpx.Response,
    limit: int,
    too_large: Callable[[httpx.Response], Exception],
    each_chunk: Callable[[], None] | None = None,
) -> bytes:
    """Async twin of :func:`read_sync`."""
    if _declared_over(response, limit):
        raise too_large(response)
    coding = _coding(response)
    if response.is_stream_consumed:
        return _whole(response, limit, too_large)
    inflater = _Inflater(response, coding, limit, too_large)
    async for chunk in response.aiter_raw():
        inflater.feed(chunk)
        if each_chunk is not None:
            each_chunk()
    return inflater.finish()


def _whole(response: httpx.Response, limit: int, too_large: Callable[[httpx.Response], Exception]) -> bytes:
    if len(response.content) > limit:
        raise too_large(response)
    return response.content
