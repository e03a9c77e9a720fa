"""The two runners: the only code that performs effects.

:func:`run_sync` drives a flow (``_effects.py``) with ``httpx.Client`` and
the shared store's blocking methods, :func:`run_async` with
``httpx.AsyncClient`` and its asyncio methods. They are the only deliberate
twins, together with their coalescers: concurrent identical requests (same
``coalesce_key``) share one upstream call. The leader keeps its slot until its
flow has consumed the reply, so a caller that arrives meanwhile either joins
the call or finds the flow's state updated: never a second fetch. Transport
failures are thrown into the flow as :class:`ServiceUnavailable`, so a flow
can fall back (e.g. to its last good key set) where that is safe.

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
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from . import diagnostics
from ._bounded_read import ACCEPT_ENCODING, read_async, read_sync
from ._effects import (
    CallVerifier,
    GuardFlow,
    HttpReply,
    HttpRequest,
    SharedAdd,
    SharedDelete,
    SharedEffect,
    SharedGet,
    SharedSet,
    SharedWait,
)
from .errors import ServiceUnavailable
from .upstream import ObservedCall, Upstream, endpoint_of, missed_deadline

if TYPE_CHECKING:
    from .shared import SharedStore

__all__ = [
    "AsyncCoalescer",
    "SyncCoalescer",
    "fetch_async",
    "fetch_sync",
    "perform_shared",
    "perform_shared_sync",
    "run_async",
    "run_sync",
]

T = TypeVar("T")

USER_AGENT = "tokenguard/0.1"


def _headers(request: HttpRequest) -> dict[str, str]:
    headers = {"Accept": "application/json", "Accept-Encoding": ACCEPT_ENCODING, "User-Agent": USER_AGENT}
    headers.update(request.headers)
    return headers


def _oversized(request: HttpRequest) -> ServiceUnavailable:
    return ServiceUnavailable(f"{request.purpose} response exceeds {request.max_bytes} bytes", reason="oversized")


def _transport_failure(request: HttpRequest, exc: Exception) -> ServiceUnavailable:
    diagnostics.upstream_failed(request.purpose, endpoint_of(request.url), exc)  # the URL and the OS error
    if isinstance(exc, httpx.TimeoutException):
        return ServiceUnavailable(f"{request.purpose} request timed out", reason="timeout")
    return ServiceUnavailable(f"{request.purpose} request failed", reason="transport")


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
            def in_time() -> None:
                if deadline_at is not None and time.monotonic() >= deadline_at:
                    raise ServiceUnavailable(f"{request.purpose} request missed its deadline", reason="deadline")

            body = read_sync(response, request.max_bytes, lambda _: _oversized(request), in_time)
            return HttpReply(response.status_code, _lower(response.headers), body)
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
            body = await read_async(response, request.max_bytes, lambda _: _oversized(request))
            return HttpReply(response.status_code, _lower(response.headers), body)
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
        with ObservedCall(upstream, request) as call:
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
        raise missed_deadline(request, deadline) from None


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
        with ObservedCall(upstream, request) as call:
            try:
                async with asyncio.timeout(upstream.deadline):
                    call.reply = await fetch_async(client(), request)
            except TimeoutError:
                raise missed_deadline(request, upstream.deadline) from None
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
                request = flow.send(request.default if store is None else perform_shared_sync(request, store))
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
                request = flow.throw(missed_deadline(request, upstream.deadline if upstream else 0))
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
                request = flow.send(request.default if store is None else await perform_shared(request, store))
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
                request = flow.throw(missed_deadline(request, upstream.deadline if upstream else 0))
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


# ---------------------------------------------------------------------- shared-store effects


def perform_shared_sync(effect: SharedEffect, store: SharedStore) -> Any:
    """Carry out one shared-store effect with the store's blocking methods; return the flow's answer."""
    if isinstance(effect, SharedGet):
        return store.get_sync(effect.key)
    if isinstance(effect, SharedSet):
        return store.set_sync(effect.key, effect.value, effect.ttl)
    if isinstance(effect, SharedAdd):
        return store.add_sync(effect.key, b"1", effect.ttl)
    if isinstance(effect, SharedDelete):
        return store.delete_sync(effect.key)
    if isinstance(effect, SharedWait):
        return _wait_sync(effect, store)
    raise TypeError(f"unknown shared-store effect {effect!r}")


async def perform_shared(effect: SharedEffect, store: SharedStore) -> Any:
    """Async twin of :func:`perform_shared_sync`."""
    if isinstance(effect, SharedGet):
        return await store.get(effect.key)
    if isinstance(effect, SharedSet):
        return await store.set(effect.key, effect.value, effect.ttl)
    if isinstance(effect, SharedAdd):
        return await store.add(effect.key, b"1", effect.ttl)
    if isinstance(effect, SharedDelete):
        return await store.delete(effect.key)
    if isinstance(effect, SharedWait):
        return await _wait_async(effect, store)
    raise TypeError(f"unknown shared-store effect {effect!r}")


def _wait_sync(wait: SharedWait, store: SharedStore) -> tuple[bytes | None, bool]:
    started = time.monotonic()
    while True:
        value = store.get_sync(wait.key)
        if wait.found(value):
            return value, False
        held = store.get_sync(wait.lock) is not None
        waited = time.monotonic() - started
        if wait.gives_up(held, waited):
            return wait.outcome(store.get_sync(wait.key), held, waited)
        time.sleep(wait.poll_seconds)


async def _wait_async(wait: SharedWait, store: SharedStore) -> tuple[bytes | None, bool]:
    started = time.monotonic()
    while True:
        value = await store.get(wait.key)
        if wait.found(value):
            return value, False
        held = await store.get(wait.lock) is not None
        waited = time.monotonic() - started
        if wait.gives_up(held, waited):
            return wait.outcome(await store.get(wait.key), held, waited)
        await asyncio.sleep(wait.poll_seconds)
