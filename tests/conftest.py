"""Shared fixtures: a real loopback issuer, real uvicorn and WSGI servers."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn
from werkzeug.serving import make_server

from tokenguard.testing import LocalIssuer

API = "https://api.test"


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback traffic must never be sent through a proxy from the environment."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(scope="session")
def shared_issuer() -> Iterator[LocalIssuer]:
    """One issuer for tests that only mint and verify (keys are costly to generate)."""
    with LocalIssuer() as issuer:
        yield issuer


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    """A fresh issuer for tests that count requests, rotate keys or inject faults."""
    with LocalIssuer(algorithms=("RS256", "ES256")) as issuer:
        yield issuer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class UvicornServer:
    """An ASGI app under a real uvicorn on a loopback port."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> UvicornServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class WSGIServer:
    """A WSGI app under Werkzeug's threaded server on a loopback port."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def __enter__(self) -> WSGIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)
        self.server.server_close()


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[Any]:
    """The real node oidc-provider, shared by every module that needs it."""
    from .test_oidc_provider import OIDCProvider

    server = OIDCProvider()
    server.start()
    try:
        yield server
    finally:
        server.stop()
