"""The token clients read bounded answers: a token endpoint streaming without end is refused, not buffered."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gzip
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import pytest

from tokenguard.client import ClientCredentialsAuth, DianClient, DianError, TokenEndpointError
from tokenguard.client.dian import MAX_ANSWER_BYTES
from tokenguard.client.oauth import MAX_TOKEN_ANSWER_BYTES

from .test_client import KEY

pytestmark = pytest.mark.integration

#: How much a hostile endpoint offers: far past either bound.
OFFERED = 8 * 1024 * 1024
CHUNK = 64 * 1024
DIAN_OPTIONS: dict[str, Any] = {
    "client_id": "my-client",
    "client_secret": "client-secret",
    "encryption_key": KEY,
    "tipo_documento": "US",
    "nro_documento": "1234567890",
    "nit": "900123456",
    "password": "pw",
}


@functools.cache
def gzip_bomb() -> bytes:
    """64 MiB of JSON whitespace, gzipped: about 64 KiB on the wire, well under either declared bound."""
    return gzip.compress(b" " * (64 * 1024 * 1024), 9)


class Loopback:
    """A threaded loopback HTTP server; every GET and POST (its body read) is answered by :meth:`answer`."""

    def __init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def _serve(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.answer(self)

            do_GET = do_POST = _serve  # noqa: N815

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def answer(self, request: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Endless(Loopback):
    """Answers every request with a huge 200, declared, chunked or a gzip bomb; counts bytes sent."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sent = 0
        super().__init__()

    def answer(self, request: BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Cache-Control", "no-store")
        if self.mode == "gzip":
            bomb = gzip_bomb()
            request.send_header("Content-Encoding", "gzip")
            request.send_header("Content-Length", str(len(bomb)))
            request.end_headers()
            with contextlib.suppress(OSError):
                request.wfile.write(bomb)
            return
        if self.mode == "declared":
            request.send_header("Content-Length", str(OFFERED))
        else:
            request.send_header("Transfer-Encoding", "chunked")
        request.end_headers()
        block = b" " * CHUNK
        try:
            while self.sent < OFFERED:
                if self.mode == "declared":
                    request.wfile.write(block)
                else:
                    request.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                self.sent += len(block)
        except OSError:
            return  # the client hung up: what a bounded reader does
        if self.mode == "chunked":
            request.wfile.write(b"0\r\n\r\n")


class Coded(Loopback):
    """Answers every request with ``document`` in a content-coding; records the Accept-Encoding offered.

    ``coding`` is ``gzip``, ``deflate``, ``raw-deflate`` (deflate without its
    zlib wrapper, labelled deflate), ``identity``, ``br`` (the document as it
    is, labelled br: refused before anyone reads it) or ``identity-<label>``
    (the document as it is, labelled ``<label>``: a corrupt answer). ``label``
    overrides the Content-Encoding sent.
    """

    def __init__(self, coding: str, document: bytes, label: str | None = None) -> None:
        self.offered: list[str] = []
        self.body = {
            "gzip": gzip.compress(document),
            "deflate": zlib.compress(document),
            "raw-deflate": zlib.compress(document)[2:-4],
        }.get(coding, document)
        self.label = label if label is not None else coding.removeprefix("identity-").removeprefix("raw-")
        super().__init__()

    def answer(self, request: BaseHTTPRequestHandler) -> None:
        self.offered.append(request.headers.get("Accept-Encoding", ""))
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        if self.label != "identity":
            request.send_header("Content-Encoding", self.label)
        request.send_header("Content-Length", str(len(self.body)))
        request.end_headers()
        request.wfile.write(self.body)


@pytest.fixture(params=["declared", "chunked"])
def endless(request: pytest.FixtureRequest) -> Iterator[Endless]:
    with Endless(request.param) as server:
        yield server


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_token_client_refuses_an_answer_past_its_bound(endless: Endless, flavour: str) -> None:
    """An endless token answer is a TokenEndpointError naming the bound; far less than offered was read."""
    auth = ClientCredentialsAuth("api", "secret", token_endpoint=f"{endless.url}/token")
    with pytest.raises(TokenEndpointError, match=f"larger than {MAX_TOKEN_ANSWER_BYTES} bytes") as refused:
        if flavour == "sync":
            auth.get_token_sync()
        else:
            asyncio.run(auth.get_token())
    assert refused.value.error == "invalid_response"
    assert endless.sent < OFFERED  # the client hung up instead of reading it all


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_dian_client_refuses_an_answer_past_its_bound(endless: Endless, flavour: str) -> None:
    """The DIAN client reads at most MAX_ANSWER_BYTES of any answer too."""
    options = DIAN_OPTIONS
    if flavour == "sync":
        client = DianClient(endless.url, sleep=lambda s: None, **options)
        with pytest.raises(DianError, match=f"larger than {MAX_ANSWER_BYTES} bytes"):
            client.login()
        client.close()
    else:
        from tokenguard.client import AsyncDianClient

        async def run() -> None:
            async def no_sleep(seconds: float) -> None:
                return None

            client = AsyncDianClient(endless.url, sleep=no_sleep, **options)
            try:
                with pytest.raises(DianError, match=f"larger than {MAX_ANSWER_BYTES} bytes"):
                    await client.login()
            finally:
                await client.aclose()

        asyncio.run(run())
    assert endless.sent < OFFERED


@pytest.mark.parametrize("client", ["token-sync", "token-async", "dian-sync"])
def test_a_compressed_answer_is_bounded_as_it_is_inflated(client: str) -> None:
    """A gzip bomb (64 KiB on the wire, 64 MiB inflated) is refused at the bound without being inflated
    whole: httpx inflates each 64 KiB read at once, so a bound checked per decoded chunk held ~64 MiB."""
    import tracemalloc

    gzip_bomb()  # compressed before memory is traced
    with Endless("gzip") as server:
        tracemalloc.start()
        try:
            if client == "dian-sync":
                dian = DianClient(server.url, sleep=lambda s: None, **DIAN_OPTIONS)
                with pytest.raises(DianError, match=f"larger than {MAX_ANSWER_BYTES} bytes"):
                    dian.login()
                dian.close()
            else:
                auth = ClientCredentialsAuth("api", "secret", token_endpoint=f"{server.url}/token")
                with pytest.raises(TokenEndpointError, match=f"larger than {MAX_TOKEN_ANSWER_BYTES} bytes"):
                    if client == "token-sync":
                        auth.get_token_sync()
                    else:
                        asyncio.run(auth.get_token())
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 8 * MAX_TOKEN_ANSWER_BYTES, f"{peak / 2**20:.1f} MiB held for a {MAX_TOKEN_ANSWER_BYTES} byte bound"


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate", "identity"])
def test_a_compressed_token_answer_is_read(coding: str) -> None:
    """Token endpoints that compress their answers (gzip; deflate with or without its zlib wrapper) still work."""
    answer = b'{"access_token": "abc", "token_type": "Bearer", "expires_in": 300}'
    with Coded(coding, answer) as server:
        url = f"{server.url}/token"
        assert ClientCredentialsAuth("api", "secret", token_endpoint=url).get_token_sync().access_token == "abc"
        token = asyncio.run(ClientCredentialsAuth("api", "secret", token_endpoint=url).get_token())
        assert token.access_token == "abc"


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_dian_reads_a_gzip_answer(flavour: str) -> None:
    """A DIAN answer sent gzipped is read once: the bounded body, already inflated, is not inflated again
    (the rebuilt response kept Content-Encoding: gzip, and httpx.DecodingError escaped instead of a DToken)."""
    answer = b'{"accessToken": "dian-at", "refreshToken": "rt", "expireIn": 3600, "clientId": "my-client "}'
    with Coded("gzip", answer) as server:
        if flavour == "sync":
            client = DianClient(server.url, sleep=lambda s: None, **DIAN_OPTIONS)
            try:
                token = client.login()
            finally:
                client.close()
        else:
            from tokenguard.client import AsyncDianClient

            async def run() -> Any:
                async def no_sleep(seconds: float) -> None:
                    return None

                client = AsyncDianClient(server.url, sleep=no_sleep, **DIAN_OPTIONS)
                try:
                    return await client.login()
                finally:
                    await client.aclose()

            token = asyncio.run(run())
    assert token.access_token == "dian-at" and token.client_id == "my-client"
