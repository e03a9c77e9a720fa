"""Flows and the two runners that perform their HTTP effects.

Strategy: every multi-step exchange (discovery → JWKS → verify, introspection)
is written once as a generator *flow* that yields :class:`HttpRequest` effects
and receives :class:`HttpReply` results (httpx's ``Auth.auth_flow`` pattern).
Transport failures are thrown into the flow as :class:`ServiceUnavailable`,
so a flow can fall back (e.g. to its last good key set) where that is safe.

:func:`run_sync` drives a flow with ``httpx.Client``, :func:`run_async` with
``httpx.AsyncClient``. They are the only code that touches the network, and
the only deliberate twins, together with their coalescers: concurrent
identical requests (same ``coalesce_key``) share one upstream call. The
leader keeps its slot until its flow has consumed the reply, so a caller that
arrives meanwhile either joins the call or finds the flow's state updated:
never a second fetch.

Fetch hygiene: no redirects (a redirect could point anywhere), a response
size cap, ``Accept: application/json``, a ``User-Agent``, timeouts.

Deadline: httpx's timeouts bound each socket operation, not a call, so a
server that trickles its answer a byte a second keeps a call alive for as
long as it likes. Every guarded call therefore has one total deadline
(connect + headers + body, :attr:`Upstream.deadline`): async calls run under
``asyncio.timeout``; blocking calls run on a small worker pool while the
caller waits at most the deadline (the worker's new connection is shut
down at the deadline, see :class:`_SocketCutter`; a reused one stops at the
next chunk past it, its reads bounded by what was left). Coalesced waiters wait
no longer than that either. A missed deadline is a ``ServiceUnavailable``
with reason ``deadline``, recorded as a failure by the circuit breaker.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import math
import socket
import threading
import time
from collections.abc import Callable, Generator, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from . import diagnostics
from .errors import ServiceUnavailable
from .telemetry import upstream_span

if TYPE_CHECKING:
    from .breaker import CircuitBreakers
    from .limits import ConcurrencyLimit
    from .metrics import Metrics
    from .shared import SharedStore

__all__ = [
    "AsyncCoalescer",
    "Flow",
    "HttpReply",
    "HttpRequest",
    "SharedEffect",
    "SyncCoalescer",
    "Upstream",
    "run_async",
    "run_sync",
]

T = TypeVar("T")

USER_AGENT = "tokenguard/0.1"
#: Upstreams that authenticate this API: a 401/403 there is outcome ``client_auth_failed``, a failure.
CLIENT_AUTH_PURPOSES = frozenset({"introspection", "token"})
#: Upper bound on any upstream document (discovery, JWKS, introspection).
DEFAULT_MAX_RESPONSE_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """An HTTP request a flow needs performed. Pure data."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    form: tuple[tuple[str, str], ...] | None = field(default=None, repr=False)
    #: Concurrent requests with the same key share one upstream call; ``None`` never shares.
    coalesce_key: str | None = None
    max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    #: Which upstream this is, for error text and stats ("jwks", "discovery", "introspection").
    purpose: str = "upstream"
    #: The version of the document the flow saw when it decided to fetch; lets
    #: a caller that arrives just after an identical fetch reuse its reply.
    generation: int | None = None


@dataclass(frozen=True, slots=True)
class HttpReply:
    """What came back: status, lower-cased headers, body bytes."""

    status: int
    headers: Mapping[str, str]
    body: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class CallVerifier:
    """Ask the user's custom verifier about a token (sync or async callable)."""

    verifier: Callable[[str], object] = field(repr=False)
    token: str = field(repr=False)


def json_object(reply: HttpReply, source: str) -> dict[str, Any]:
    """The body of a 200 reply as a JSON object; anything else is the upstream's fault.

    Raises:
        ServiceUnavailable: non-200 status, invalid JSON, or JSON that is not an object.
    """
    if reply.status != 200:
        raise ServiceUnavailable(f"{source} answered HTTP {reply.status}")
    try:
        document = json.loads(reply.body)
    except (ValueError, RecursionError):
        raise ServiceUnavailable(f"{source} answer is not valid JSON") from None
    if not isinstance(document, dict):
        raise ServiceUnavailable(f"{source} answer is not a JSON object")
    return document


class SharedEffect:
    """An operation on the shared store (see ``shared.py``); runners call ``run_sync``/``run``.

    ``default`` is what the flow receives when no shared store is configured.
    """

    __slots__ = ()
    default: Any = None

    def run_sync(self, store: SharedStore) -> Any:
        raise NotImplementedError

    async def run(self, store: SharedStore) -> Any:
        raise NotImplementedError


Effect = HttpRequest | CallVerifier | SharedEffect
#: A fetch flow: yields requests (and shared-store effects), receives replies (and their answers).
Flow = Generator[HttpRequest | SharedEffect, Any, T]
#: The guard's top-level flow, which may also call a custom verifier.
GuardFlow = Generator[Effect, Any, T]


def _headers(request: HttpRequest) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    headers.update(request.headers)
    return headers


def _oversized(request: HttpRequest) -> ServiceUnavailable:
    return ServiceUnavailable(f"{request.purpose} response exceeds {request.max_bytes} bytes", reason="oversized")


def _transport_failure(request: HttpRequest, exc: Exception) -> ServiceUnavailable:
    diagnostics.upstream_failed(request.purpose, _endpoint(request.url), exc)  # the URL and the OS error
    if isinstance(exc, httpx.TimeoutException):
        return ServiceUnavailable(f"{request.purpose} request timed out", reason="timeout")
    return ServiceUnavailable(f"{request.purpose} request failed", reason="transport")


def _missed(request: HttpRequest, deadline: float) -> ServiceUnavailable:
    return ServiceUnavailable(f"{request.purpose} request missed its {deadline:g} s deadline", reason="deadline")


def _bounded(timeout: httpx.Timeout, remaining: float) -> httpx.Timeout:
    """``timeout`` with no operation allowed longer than ``remaining`` seconds."""

    def cap(value: float | None) -> float:
        return remaining if value is None else min(value, remaining)

    return httpx.Timeout(
        connect=cap(timeout.connect), read=cap(timeout.read), write=cap(timeout.write), pool=cap(timeout.pool)
    )


def fetch_sync(client: httpx.Client, request: HttpRequest, deadline_at: float | None = None) -> HttpReply:
    """Perform one request; every failure becomes :class:`ServiceUnavailable`.

    With ``deadline_at`` (a ``time.monotonic()`` instant), each socket
    operation is bounded by the time left and the body is abandoned at the
    first chunk past it.
    """
    extra: dict[str, Any] = {}
    cutter: _SocketCutter | None = None
    if deadline_at is not None:
        remaining = deadline_at - time.monotonic()
        if remaining <= 0:
            raise ServiceUnavailable(f"{request.purpose} request missed its deadline", reason="deadline")
        extra["timeout"] = _bounded(client.timeout, remaining)
        cutter = _SocketCutter(remaining)
        extra["extensions"] = {"trace": cutter.trace}
    try:
        with client.stream(
            request.method,
            request.url,
            headers=_headers(request),
            data=dict(request.form) if request.form is not None else None,
            follow_redirects=False,
            **extra,
        ) as response:
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > request.max_bytes:
                raise _oversized(request)
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > request.max_bytes:
                    raise _oversized(request)
                if deadline_at is not None and time.monotonic() >= deadline_at:
                    raise ServiceUnavailable(f"{request.purpose} request missed its deadline", reason="deadline")
                chunks.append(chunk)
            return HttpReply(response.status_code, _lower(response.headers), b"".join(chunks))
    except httpx.HTTPError as exc:
        if deadline_at is not None and time.monotonic() >= deadline_at:
            # The socket was cut at the deadline (or a read ran into it).
            raise ServiceUnavailable(f"{request.purpose} request missed its deadline", reason="deadline") from None
        raise _transport_failure(request, exc) from exc
    finally:
        if cutter is not None:
            cutter.cancel()


class _SocketCutter:
    """Shuts down the socket of a blocking call at its deadline.

    httpx bounds each socket *read*, not the call: a server trickling its
    status line and headers one byte per read would hold the worker thread
    (and so a slot of the shared pool) for as long as it likes, long after
    the caller had its 503. The connection httpx opens for the call is
    reported through its ``trace`` extension; a timer shuts it down at the
    deadline, so the blocked read returns at once. (A kept-alive connection
    reused from the pool is not reported; its reads stay bounded by the
    time that was left, and the body by the check per chunk.)
    """

    __slots__ = ("_lock", "_streams", "_timer")

    def __init__(self, seconds: float) -> None:
        self._streams: list[Any] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True
        self._timer.start()

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            with self._lock:
                self._streams.append(info.get("return_value"))

    def _cut(self) -> None:
        with self._lock:
            streams, self._streams = self._streams, []
        for stream in streams:
            sock: Any = getattr(stream, "get_extra_info", lambda name: None)("socket")
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except (AttributeError, OSError):
                pass  # already closed, or not a socket

    def cancel(self) -> None:
        self._timer.cancel()


async def fetch_async(client: httpx.AsyncClient, request: HttpRequest) -> HttpReply:
    """Async twin of :func:`fetch_sync`."""
    try:
        async with client.stream(
            request.method,
            request.url,
            headers=_headers(request),
            data=dict(request.form) if request.form is not None else None,
            follow_redirects=False,
        ) as response:
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > request.max_bytes:
                raise _oversized(request)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > request.max_bytes:
                    raise _oversized(request)
                chunks.append(chunk)
            return HttpReply(response.status_code, _lower(response.headers), b"".join(chunks))
    except httpx.HTTPError as exc:
        raise _transport_failure(request, exc) from exc


def _lower(headers: httpx.Headers) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


class _Call:
    """One shared upstream call: a result or an error, and the state it was made from."""

    __slots__ = ("done", "error", "generation", "reply")

    def __init__(self, generation: int | None) -> None:
        self.done = threading.Event()
        self.reply: HttpReply | None = None
        self.error: ServiceUnavailable | None = None
        self.generation = generation


def _reusable(generation: int | None, done_generation: int | None) -> bool:
    # A finished reply serves a late caller only when its leader fetched after
    # seeing a document at least as new as the one the caller saw. A caller
    # that already saw that reply applied (an unknown-kid refetch) fetches anew.
    return generation is not None and done_generation is not None and generation <= done_generation


class SyncCoalescer:
    """Single-flight for threads: one upstream call per ``coalesce_key`` at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, _Call] = {}

    def join(self, key: str, generation: int | None = None) -> tuple[_Call, bool]:
        """Return the call for ``key`` and whether the caller leads it."""
        with self._lock:
            call = self._calls.get(key)
            if call is not None and (
                not call.done.is_set() or (call.error is None and _reusable(generation, call.generation))
            ):
                return call, False
            call = self._calls[key] = _Call(generation)
            return call, True

    def release(self, key: str, call: _Call) -> None:
        """The leader is done: keep a versioned success for late callers, forget the rest."""
        with self._lock:
            if (call.error is not None or call.generation is None) and self._calls.get(key) is call:
                del self._calls[key]


class AsyncCoalescer:
    """Single-flight for asyncio tasks, per event loop."""

    def __init__(self) -> None:
        self._calls: dict[tuple[int, str], tuple[asyncio.Future[HttpReply], int | None]] = {}

    def join(self, key: str, generation: int | None = None) -> tuple[asyncio.Future[HttpReply], bool]:
        """Return the shared future for ``key`` and whether the caller leads it."""
        loop = asyncio.get_running_loop()
        slot = (id(loop), key)
        entry = self._calls.get(slot)
        if entry is not None:
            future, done_generation = entry
            if not future.done() or (
                not future.cancelled() and future.exception() is None and _reusable(generation, done_generation)
            ):
                return future, False
        future = loop.create_future()
        self._calls[slot] = (future, generation)
        return future, True

    def release(self, key: str, future: asyncio.Future[HttpReply]) -> None:
        """The leader settled ``future``: keep a versioned success, forget the rest."""
        slot = (id(asyncio.get_running_loop()), key)
        entry = self._calls.get(slot)
        if entry is not None and entry[0] is future:
            if entry[1] is None or future.cancelled() or future.exception() is not None:
                del self._calls[slot]


class Upstream:
    """How a guard treats its upstreams: breakers, concurrency caps, metrics, the shared store.

    Every call that reaches the network goes through :meth:`admit` (breaker,
    then the purpose's concurrency cap) and :meth:`outcome` (breaker and
    metrics), so the sync and async runners apply one policy.
    """

    def __init__(
        self,
        *,
        breakers: CircuitBreakers,
        metrics: Metrics,
        limits: Mapping[str, ConcurrencyLimit] | None = None,
        shared: SharedStore | None = None,
        clock: Callable[[], float] = time.monotonic,
        deadline: float = 5.0,
    ) -> None:
        self.breakers = breakers
        self.metrics = metrics
        self.limits = dict(limits or {})
        self.shared = shared
        self.clock = clock
        #: The last failure's description per endpoint, named while its breaker is open.
        self.last_failure: dict[str, str] = {}
        #: Seconds one upstream call may take in total, and a coalesced waiter wait for it.
        self.deadline = deadline

    def admit(self, request: HttpRequest) -> None:
        """Refuse at once when the endpoint's breaker is open.

        Raises:
            ServiceUnavailable: reason ``circuit_open``, ``Retry-After`` = time left.
        """
        endpoint = _endpoint(request.url)
        wait = self.breakers.get(endpoint).admit(self.clock())
        if wait is not None:
            self.metrics.upstream(request.purpose, "circuit_open")
            # The cause, not just the pause: the 503 keeps naming what went wrong.
            cause = self.last_failure.get(endpoint)
            raise ServiceUnavailable(
                f"{request.purpose} paused after repeated failures" + (f" ({cause})" if cause else ""),
                retry_after=math.ceil(wait),
                reason="circuit_open",
            )

    def refused(self, request: HttpRequest) -> ServiceUnavailable:
        """The error for a call that found no free concurrency slot in time."""
        self.metrics.upstream(request.purpose, "overloaded")
        return ServiceUnavailable(f"too many {request.purpose} calls in flight", retry_after=1, reason="overloaded")

    def outcome(
        self, request: HttpRequest, started: float, reply: HttpReply | None, error: ServiceUnavailable | None
    ) -> None:
        """Record a finished call with the breaker and the metrics."""
        elapsed = time.perf_counter() - started
        breaker = self.breakers.get(_endpoint(request.url))
        if reply is not None and reply.status in (401, 403) and request.purpose in CLIENT_AUTH_PURPOSES:
            # RFC 7662 §2.1 / RFC 6749 §2.3: the endpoint authenticates *us*; 401/403 is our credentials' fault.
            diagnostics.client_auth_failed(request.purpose, _endpoint(request.url), reply.status)
            refused = f"{request.purpose} endpoint refused this API's client credentials (HTTP {reply.status})"
            reply, error = None, ServiceUnavailable(refused, reason="client_auth_failed")
        if reply is not None and reply.status < 500 and reply.status != 429:
            breaker.succeeded()
            self.metrics.upstream(request.purpose, "ok", elapsed)
            return
        reason = error.reason if error is not None else f"http_{reply.status if reply else 0}"
        if reply is not None and reply.status >= 500:
            reason = "http_5xx"
            diagnostics.upstream_failed(request.purpose, _endpoint(request.url), f"answered HTTP {reply.status}")
        status = reply.status if reply is not None else 0
        self.last_failure[_endpoint(request.url)] = (
            error.description if error is not None else f"{request.purpose} answered HTTP {status}"
        )
        if breaker.failed(self.clock()):
            self.metrics.event("circuit_opened")
        self.metrics.upstream(request.purpose, reason, elapsed)


def _endpoint(url: str) -> str:
    # Breakers, span attributes and metric labels go by endpoint: without the
    # query (variable, it would split one upstream into many) and without any
    # user:password@ a configured URL may carry, which must not reach telemetry.
    url = url.split("?", 1)[0]
    scheme, separator, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if separator and "@" in authority:
        url = f"{scheme}://{authority.rsplit('@', 1)[1]}{slash}{path}"
    return url


class _Observed:
    """Records one upstream call in a span, the breaker and the metrics; the twins below share it."""

    __slots__ = ("_handle", "_request", "_span", "_started", "_upstream", "reply")

    def __init__(self, upstream: Upstream, request: HttpRequest) -> None:
        self._upstream = upstream
        self._request = request
        self._span = upstream_span(request.purpose, request.method, _endpoint(request.url))
        self._started = 0.0
        self.reply: HttpReply | None = None

    def __enter__(self) -> _Observed:
        self._started = time.perf_counter()
        self._handle = self._span.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        if isinstance(error, ServiceUnavailable):
            self._handle.failure(error.reason)
            self._upstream.outcome(self._request, self._started, None, error)
        elif self.reply is not None:
            self._handle.status(self.reply.status)
            self._upstream.outcome(self._request, self._started, self.reply, None)
        self._span.__exit__(kind, error, tb)


def _fetch_guarded_sync(
    client: Callable[[], httpx.Client], request: HttpRequest, upstream: Upstream | None
) -> HttpReply:
    if upstream is None:
        return fetch_sync(client(), request)
    upstream.admit(request)
    limit = upstream.limits.get(request.purpose)
    if limit is not None and not limit.acquire_sync():
        raise upstream.refused(request)
    try:
        with _Observed(upstream, request) as call:
            call.reply = _fetch_by_deadline(client(), request, upstream.deadline)
        return call.reply
    finally:
        if limit is not None:
            limit.release_sync()


#: Runs blocking upstream calls so that their callers can stop waiting at the
#: deadline. Shared by every guard of the process; its threads start on demand.
#: A call that outlives its caller still ends by itself (its reads are bounded
#: by the time that was left, and it stops at the first chunk past it), so
#: even a pool full of trickling servers drains in about two deadlines.
_POOL = ThreadPoolExecutor(max_workers=64, thread_name_prefix="tokenguard-upstream")


def _fetch_by_deadline(client: httpx.Client, request: HttpRequest, deadline: float) -> HttpReply:
    deadline_at = time.monotonic() + deadline
    context = contextvars.copy_context()  # the caller's tracing context, in the worker
    future = _POOL.submit(context.run, fetch_sync, client, request, deadline_at)
    try:
        return future.result(timeout=deadline)
    except FutureTimeout:
        future.cancel()  # still queued behind stuck calls: never started
        raise _missed(request, deadline) from None


async def _fetch_guarded_async(
    client: Callable[[], httpx.AsyncClient], request: HttpRequest, upstream: Upstream | None
) -> HttpReply:
    if upstream is None:
        return await fetch_async(client(), request)
    upstream.admit(request)
    limit = upstream.limits.get(request.purpose)
    if limit is not None and not await limit.acquire():
        raise upstream.refused(request)
    try:
        with _Observed(upstream, request) as call:
            try:
                async with asyncio.timeout(upstream.deadline):
                    call.reply = await fetch_async(client(), request)
            except TimeoutError:
                raise _missed(request, upstream.deadline) from None
        return call.reply
    finally:
        if limit is not None:
            limit.release()


#: Added to a waiter's bound so that the leader's own deadline error reaches it first.
_WAITER_GRACE = 0.25


def _waiter_bound(upstream: Upstream | None) -> float | None:
    return None if upstream is None else upstream.deadline + _WAITER_GRACE


def run_sync(
    flow: GuardFlow[T],
    client: Callable[[], httpx.Client],
    coalescer: SyncCoalescer,
    upstream: Upstream | None = None,
) -> T:
    """Drive ``flow`` to completion with blocking I/O.

    ``client`` is a factory, called only when the flow needs the network: a
    guard with static keys never builds an HTTP client (or its TLS context).
    """
    try:
        request = next(flow)
        while True:
            if isinstance(request, CallVerifier):
                answer = request.verifier(request.token)
                if inspect.isawaitable(answer):
                    close = getattr(answer, "close", None)
                    if close is not None:
                        close()
                    raise TypeError("an async custom verifier cannot serve verify_sync(); give a sync callable")
                request = flow.send(answer)
                continue
            if isinstance(request, SharedEffect):
                store = upstream.shared if upstream is not None else None
                request = flow.send(request.default if store is None else request.run_sync(store))
                continue
            key = request.coalesce_key
            if key is None:
                try:
                    reply = _fetch_guarded_sync(client, request, upstream)
                except ServiceUnavailable as exc:
                    request = flow.throw(exc)
                    continue
                request = flow.send(reply)
                continue
            call, leader = coalescer.join(key, request.generation)
            if leader:
                try:
                    call.reply = _fetch_guarded_sync(client, request, upstream)
                except ServiceUnavailable as exc:
                    call.error = exc
                call.done.set()
            elif not call.done.wait(_waiter_bound(upstream)):
                # The leader is bounded by the same deadline: this only guards
                # against a leader that never reports back.
                request = flow.throw(_missed(request, upstream.deadline if upstream else 0))
                continue
            try:
                if call.error is not None:
                    request = flow.throw(
                        ServiceUnavailable(
                            call.error.description, retry_after=call.error.retry_after, reason=call.error.reason
                        )
                    )
                else:
                    assert call.reply is not None
                    request = flow.send(call.reply)
            finally:
                if leader:
                    # Only now: the flow has applied the reply to its state.
                    coalescer.release(key, call)
    except StopIteration as done:
        result: T = done.value
        return result
    finally:
        flow.close()


async def run_async(
    flow: GuardFlow[T],
    client: Callable[[], httpx.AsyncClient],
    coalescer: AsyncCoalescer,
    upstream: Upstream | None = None,
) -> T:
    """Drive ``flow`` to completion with ``await`` (``client`` is a factory, as for :func:`run_sync`)."""
    try:
        request = next(flow)
        while True:
            if isinstance(request, CallVerifier):
                answer = request.verifier(request.token)
                if inspect.isawaitable(answer):
                    answer = await answer
                request = flow.send(answer)
                continue
            if isinstance(request, SharedEffect):
                store = upstream.shared if upstream is not None else None
                request = flow.send(request.default if store is None else await request.run(store))
                continue
            key = request.coalesce_key
            if key is None:
                try:
                    reply = await _fetch_guarded_async(client, request, upstream)
                except ServiceUnavailable as exc:
                    request = flow.throw(exc)
                    continue
                request = flow.send(reply)
                continue
            future, leader = coalescer.join(key, request.generation)
            if leader:
                try:
                    future.set_result(await _fetch_guarded_async(client, request, upstream))
                except ServiceUnavailable as exc:
                    future.set_exception(exc)
                    # Retrieve it once so asyncio does not warn when nobody else waits.
                    future.exception()
                except BaseException as exc:  # cancelled: let waiters retry on their own
                    future.set_exception(ServiceUnavailable(f"{request.purpose} request cancelled"))
                    future.exception()
                    coalescer.release(key, future)
                    raise exc
                # No await between settling and the flow's next step: waiters
                # resume only after the flow has applied the reply.
                coalescer.release(key, future)
            try:
                if future.done():
                    # The leader, or a late joiner: no await here, so the flow
                    # applies the reply before any other task can start a miss.
                    reply = future.result()
                else:
                    reply = await asyncio.wait_for(asyncio.shield(future), _waiter_bound(upstream))
            except TimeoutError:
                request = flow.throw(_missed(request, upstream.deadline if upstream else 0))
                continue
            except ServiceUnavailable as exc:
                request = flow.throw(
                    ServiceUnavailable(exc.description, retry_after=exc.retry_after, reason=exc.reason)
                )
                continue
            request = flow.send(reply)
    except StopIteration as done:
        result: T = done.value
        return result
    finally:
        flow.close()
