"""Every upstream call has one total deadline: a server trickling its answer cannot hold requests.

The upstream here is a real socket server that sends its reply (or its
headers) one byte at a time; httpx's per-read timeouts never fire against it.
The bounds asserted are the behaviour required (a 503 within deadline + 1 s),
not speed.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tokenguard import ServiceUnavailable, TokenGuard, _runner
from tokenguard._effects import HttpReply
from tokenguard.breaker import BreakerSettings
from tokenguard.errors import ConfigurationError
from tokenguard.introspection import Introspection
from tokenguard.redis_cache import RedisCache

from .conftest import RedisServer

pytestmark = pytest.mark.integration

DEADLINE = 1.0
#: What the issue allows past the deadline before every waiter has its 503.
SLACK = 1.0


class TricklingServer:
    """An HTTP/1.1 server on loopback that sends each reply one byte every ``interval`` seconds.

    ``mode`` is ``"body"`` (headers at once, then an 80-byte body trickled) or
    ``"headers"`` (even the status line and headers are trickled).
    """

    def __init__(self, mode: str = "body", interval: float = 0.4) -> None:
        self.mode = mode
        self.interval = interval
        self.connections = 0
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> TricklingServer:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            worker = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            worker.start()
            self._threads.append(worker)

    def _serve(self, conn: socket.socket) -> None:
        body = b'{"issuer":"x","jwks_uri":"x","padding":"' + b"p" * 40 + b'"}'
        body = body.ljust(80, b" ")
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        try:
            conn.settimeout(5)
            conn.recv(65536)  # the request (small enough for one read)
            if self.mode == "body":
                conn.sendall(head)
                trickled = body
            else:
                trickled = head + body
            for byte in trickled:
                if self._stop.wait(self.interval):
                    return
                conn.sendall(bytes([byte]))
        except OSError:
            pass
        finally:
            conn.close()


@pytest.fixture(params=["body", "headers"])
def trickler(request: pytest.FixtureRequest) -> Iterator[TricklingServer]:
    with TricklingServer(mode=request.param) as server:
        yield server


def token_for(issuer: str) -> str:
    """A JWT naming ``issuer``: verifying it needs the issuer's discovery document."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    claims = {"iss": issuer, "aud": "https://api.test", "sub": "u", "iat": now, "exp": now + 300}
    return pyjwt.encode(claims, key, algorithm="ES256", headers={"kid": "k1", "typ": "at+jwt"})


def guard_for(server: TricklingServer, **options: object) -> TokenGuard:
    return TokenGuard.from_issuer(server.url, audience="https://api.test", deadline=DEADLINE, **options)  # type: ignore[arg-type]


def test_deadline_must_be_a_positive_number() -> None:
    """A deadline of zero, a negative one, infinity or a string is refused at construction."""
    for bad in (0, -1, float("inf"), float("nan"), "5", True):
        with pytest.raises(ConfigurationError, match="deadline"):
            TokenGuard.from_keys(issuer="https://i.test", audience="a", hmac_keys={None: "s" * 32}, deadline=bad)


def test_twenty_threads_all_get_503_within_the_deadline(trickler: TricklingServer) -> None:
    """20 threads needing one trickled discovery document: each gets 503 with Retry-After in time."""
    guard = guard_for(trickler)
    token = token_for(trickler.url)
    outcomes: list[tuple[float, BaseException | None]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(20)

    def call() -> None:
        barrier.wait()
        started = time.monotonic()
        error: BaseException | None = None
        try:
            guard.verify_sync(token)
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            error = exc
        with lock:
            outcomes.append((time.monotonic() - started, error))

    threads = [threading.Thread(target=call) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE + SLACK + 5)
    assert len(outcomes) == 20, "some threads were still waiting"
    for elapsed, error in outcomes:
        assert isinstance(error, ServiceUnavailable), error
        assert elapsed <= DEADLINE + SLACK
        response = guard.error_response(error)
        assert response.status_code == 503
        assert ("Retry-After", str(error.retry_after)) in response.headers
    # The waiters joined one call: one connection, one recorded deadline failure.
    assert trickler.connections == 1
    assert guard.metrics().upstream_calls[("discovery", "deadline")] == 1
    guard.close()


def test_fifty_tasks_all_get_503_within_the_deadline(trickler: TricklingServer) -> None:
    """50 asyncio tasks needing one trickled discovery document: each gets 503 in time."""
    guard = guard_for(trickler)
    token = token_for(trickler.url)

    async def call() -> tuple[float, BaseException | None]:
        started = time.monotonic()
        try:
            await guard.verify(token)
        except Exception as exc:  # noqa: BLE001 - asserted below
            return time.monotonic() - started, exc
        return time.monotonic() - started, None

    async def run() -> list[tuple[float, BaseException | None]]:
        try:
            return await asyncio.wait_for(asyncio.gather(*(call() for _ in range(50))), DEADLINE + SLACK + 5)
        finally:
            await guard.aclose()

    outcomes = asyncio.run(run())
    assert len(outcomes) == 50
    for elapsed, error in outcomes:
        assert isinstance(error, ServiceUnavailable), error
        assert error.reason == "deadline"
        assert elapsed <= DEADLINE + SLACK
        assert ("Retry-After", str(error.retry_after)) in guard.error_response(error).headers
    assert trickler.connections == 1
    assert guard.metrics().upstream_calls[("discovery", "deadline")] == 1


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_deadline_misses_open_the_breaker(flavour: str) -> None:
    """A missed deadline is a breaker failure: after the threshold, calls are refused at once."""
    with TricklingServer(mode="body") as server:
        guard = guard_for(server, breaker=BreakerSettings(failure_threshold=2, reset_timeout=60))
        token = token_for(server.url)

        def verify() -> None:
            if flavour == "sync":
                guard.verify_sync(token)
            else:
                asyncio.run(guard.verify(token))

        for _ in range(2):
            with pytest.raises(ServiceUnavailable) as missed:
                verify()
            assert missed.value.reason == "deadline"
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as refused:
            verify()
        assert refused.value.reason == "circuit_open"
        assert refused.value.retry_after > 1
        assert time.monotonic() - started < DEADLINE  # refused without waiting on the server
        assert server.connections == 2
        (state,) = [s for endpoint, s in guard.metrics().breakers.items() if endpoint.startswith(server.url)]
        assert state == "open"
        guard.close()


def test_blocking_call_ends_at_its_deadline_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trickled headers do not hold the worker thread past the deadline: its socket is cut.

    Otherwise every trickled call keeps a thread of the process-wide upstream
    pool until the server stops; 64 of them and every upstream call of the
    process (to any server) waits in the queue and misses its deadline.
    """
    ended: list[float] = []
    fetch = _runner.fetch_sync

    def observed(*args: Any, **kwargs: Any) -> HttpReply:
        try:
            return fetch(*args, **kwargs)
        finally:
            ended.append(time.monotonic())

    monkeypatch.setattr(_runner, "fetch_sync", observed)
    with TricklingServer(mode="headers", interval=0.3) as server:
        guard = guard_for(server)
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as missed:
            guard.verify_sync(token_for(server.url))
        assert missed.value.reason == "deadline"
        while not ended and time.monotonic() - started < 10 * DEADLINE:
            time.sleep(0.05)
        guard.close()
    assert ended, "the worker thread was still reading"
    assert ended[0] - started <= DEADLINE + SLACK


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_trickling_introspection_is_bounded_too(flavour: str) -> None:
    """Introspection answers are subject to the same deadline (sync and async)."""
    with TricklingServer(mode="body") as server:
        guard = TokenGuard(
            introspection=Introspection(endpoint=server.url + "/introspect", client_id="rs", client_secret="s"),
            deadline=DEADLINE,
        )
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as missed:
            if flavour == "sync":
                guard.verify_sync("opaque-token-value")
            else:
                asyncio.run(guard.verify("opaque-token-value"))
        assert missed.value.reason == "deadline"
        assert time.monotonic() - started <= DEADLINE + SLACK
        guard.close()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_waiters_in_other_processes_are_bounded_too(redis_server: RedisServer, flavour: str) -> None:
    """Two workers on one Redis: the one waiting for the other's (trickled) introspection gets its 503 in time.

    The deadline is 2 s here so that the waiter has waited over a second when
    the leader fails: it then answers 503 rather than add a second slow call.
    """
    deadline = 2.0
    with TricklingServer(mode="body") as server:

        def worker() -> TokenGuard:
            return TokenGuard(
                introspection=Introspection(endpoint=server.url + "/introspect", client_id="rs", client_secret="s"),
                cache=RedisCache(redis_server.url, lock_wait=10.0),  # the deadline bounds it anyway
                hash_key=b"k" * 32,
                deadline=deadline,
            )

        leader, waiter = worker(), worker()
        token = "opaque-token-for-two-workers"
        outcomes: list[tuple[float, BaseException | None]] = []

        def sync_call(guard: TokenGuard, delay: float) -> None:
            time.sleep(delay)
            started = time.monotonic()
            try:
                guard.verify_sync(token)
            except ServiceUnavailable as exc:
                outcomes.append((time.monotonic() - started, exc))
            else:
                outcomes.append((time.monotonic() - started, None))

        async def async_call(guard: TokenGuard, delay: float) -> None:
            await asyncio.sleep(delay)
            started = time.monotonic()
            try:
                await guard.verify(token)
            except ServiceUnavailable as exc:
                outcomes.append((time.monotonic() - started, exc))
            else:
                outcomes.append((time.monotonic() - started, None))
            finally:
                await guard.aclose()

        if flavour == "sync":
            threads = [threading.Thread(target=sync_call, args=(g, d)) for g, d in ((leader, 0), (waiter, 0.2))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=deadline + SLACK + 5)
        else:

            async def both() -> None:
                await asyncio.gather(async_call(leader, 0), async_call(waiter, 0.2))

            asyncio.run(both())
        assert len(outcomes) == 2
        for elapsed, error in outcomes:
            assert isinstance(error, ServiceUnavailable)
            assert elapsed <= deadline + SLACK
        assert {error.reason for _, error in outcomes if error is not None} == {"deadline", "lock_wait"}
        assert server.connections == 1  # the waiter did not add a second slow call
