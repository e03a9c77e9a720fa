"""Single-flight without sockets: the coalescers driven directly, and both runners over MockTransport.

``SyncCoalescer`` and ``AsyncCoalescer`` decide who calls the upstream when
identical requests meet; the runners in ``tokenguard._runner`` use them. Here the
decisions are checked one join at a time, then through the runners with an
in-memory transport that counts upstream calls.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable

import httpx
import pytest

from tokenguard._effects import HttpReply
from tokenguard._runner import AsyncCoalescer, SyncCoalescer, run_async, run_sync
from tokenguard.errors import ServiceUnavailable
from tokenguard.keys import KeySet
from tokenguard.sources import FetchSettings, JWKSSource

from .flowkit import ec_jwk, forbid_network


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_network(monkeypatch)


JWKS_URI = "https://idp.test/jwks"
T0 = 1_800_000_000.0
REPLY = HttpReply(200, {}, b"{}")


# ------------------------------------------------------------------ SyncCoalescer


def test_sync_one_leader_per_key_while_a_call_is_in_flight() -> None:
    """The first caller leads; callers of the same key join its call; another key has its own."""
    coalescer = SyncCoalescer()
    call, leader = coalescer.join("GET a", 1)
    joined, joined_leads = coalescer.join("GET a", 1)
    other, other_leads = coalescer.join("GET b", 1)
    assert leader and not joined_leads and other_leads
    assert joined is call and other is not call


def test_sync_a_finished_versioned_reply_serves_callers_that_saw_no_newer_document() -> None:
    """A late caller reuses the reply when it decided to fetch from the same (or an older) generation."""
    coalescer = SyncCoalescer()
    call, _ = coalescer.join("GET a", 3)
    call.reply = REPLY
    call.done.set()
    coalescer.release("GET a", call)
    for generation in (0, 3):
        late, leads = coalescer.join("GET a", generation)
        assert late is call and not leads and late.reply is REPLY
    # A caller that already applied that reply (generation 4: an unknown-kid refetch) fetches anew.
    newer, leads = coalescer.join("GET a", 4)
    assert leads and newer is not call


def test_sync_a_request_without_generation_is_never_reused_after_release() -> None:
    """Unversioned calls (introspection) share only while in flight."""
    coalescer = SyncCoalescer()
    call, _ = coalescer.join("POST i")
    assert coalescer.join("POST i") == (call, False)  # in flight: joinable
    call.reply = REPLY
    call.done.set()
    late, leads = coalescer.join("POST i")  # done: a newcomer asks again
    assert leads and late is not call
    coalescer.release("POST i", call)
    coalescer.release("POST i", late)
    assert coalescer.join("POST i")[1] is True


def test_sync_a_failed_call_is_forgotten() -> None:
    """An error is handed to the callers that waited for it, never to later ones."""
    coalescer = SyncCoalescer()
    call, _ = coalescer.join("GET a", 1)
    call.error = ServiceUnavailable("down")
    call.done.set()
    assert coalescer.join("GET a", 1)[1] is True  # done with an error: a newcomer leads at once
    coalescer.release("GET a", call)


def test_sync_release_of_a_superseded_call_keeps_the_newer_one() -> None:
    """Releasing an old failed call does not remove the call that replaced it."""
    coalescer = SyncCoalescer()
    old, _ = coalescer.join("GET a", 1)
    old.error = ServiceUnavailable("down")
    old.done.set()
    new, leads = coalescer.join("GET a", 1)
    assert leads
    coalescer.release("GET a", old)
    assert coalescer.join("GET a", 1) == (new, False)


def test_sync_threads_meeting_at_once_elect_exactly_one_leader() -> None:
    """Twenty threads joining together: one leader, everyone on the same call."""
    coalescer = SyncCoalescer()
    barrier = threading.Barrier(20)
    seen: list[tuple[object, bool]] = []
    lock = threading.Lock()

    def join() -> None:
        barrier.wait()
        outcome = coalescer.join("GET a", 0)
        with lock:
            seen.append(outcome)

    threads = [threading.Thread(target=join) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(leads for _, leads in seen) == 1
    assert len({id(call) for call, _ in seen}) == 1


# ------------------------------------------------------------------ AsyncCoalescer


def test_async_one_leader_and_versioned_reuse() -> None:
    """Same rules as the thread twin: one leader in flight, versioned successes reused, newer callers lead."""

    async def main() -> None:
        coalescer = AsyncCoalescer()
        future, leader = coalescer.join("GET a", 2)
        assert leader and coalescer.join("GET a", 2) == (future, False)
        future.set_result(REPLY)
        coalescer.release("GET a", future)
        assert coalescer.join("GET a", 2) == (future, False)
        assert coalescer.join("GET a", 3)[1] is True

    asyncio.run(main())


def test_async_failed_and_cancelled_calls_are_forgotten() -> None:
    """A future settled with an error, or cancelled, never serves a later caller."""

    async def main() -> None:
        coalescer = AsyncCoalescer()
        failed, _ = coalescer.join("GET a", 1)
        failed.set_exception(ServiceUnavailable("down"))
        failed.exception()
        coalescer.release("GET a", failed)
        cancelled, leads = coalescer.join("GET a", 1)
        assert leads and cancelled is not failed
        cancelled.cancel()
        coalescer.release("GET a", cancelled)
        assert coalescer.join("GET a", 1)[1] is True

    asyncio.run(main())


def test_async_calls_never_cross_event_loops() -> None:
    """Each event loop has its own single-flight: a future belongs to one loop."""
    coalescer = AsyncCoalescer()
    loops = [asyncio.new_event_loop(), asyncio.new_event_loop()]

    async def join() -> tuple[asyncio.Future[HttpReply], bool]:
        return coalescer.join("GET a", 1)

    try:
        first, first_leads = loops[0].run_until_complete(join())
        second, second_leads = loops[1].run_until_complete(join())
        assert first_leads and second_leads and first is not second
        first.cancel()
        second.cancel()
    finally:
        for loop in loops:
            loop.close()


# ------------------------------------------------------------------ both runners, in memory


def jwks_transport(calls: list[str], delay: float = 0.0) -> Callable[[httpx.Request], httpx.Response]:
    body = json.dumps({"keys": [ec_jwk("a")]}).encode()

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        if delay:
            threading.Event().wait(delay)  # hold the call open so that the other callers meet it
        return httpx.Response(200, content=body, headers={"Cache-Control": "max-age=600"})

    return handle


def test_runners_agree_and_send_the_flow_requests() -> None:
    """run_sync and run_async drive the same flow to the same keys over an in-memory transport."""
    calls: list[str] = []
    handler = jwks_transport(calls)
    sync_source = JWKSSource(FetchSettings(), jwks_uri=JWKS_URI)
    client = httpx.Client(transport=httpx.MockTransport(handler))
    sync_keys = run_sync(sync_source.keys_flow("a", T0), lambda: client, SyncCoalescer())

    async def fetch() -> KeySet:
        source = JWKSSource(FetchSettings(), jwks_uri=JWKS_URI)
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as async_client:
            return await run_async(source.keys_flow("a", T0), lambda: async_client, AsyncCoalescer())

    async_keys = asyncio.run(fetch())
    client.close()
    assert calls == [JWKS_URI, JWKS_URI]
    assert sync_keys.thumbprints() == async_keys.thumbprints()  # the same key, parsed by each runner


def test_sync_runner_concurrent_misses_make_one_call() -> None:
    """Ten threads missing the same JWKS at once: one upstream call, everyone gets the keys."""
    calls: list[str] = []
    source = JWKSSource(FetchSettings(), jwks_uri=JWKS_URI)
    client = httpx.Client(transport=httpx.MockTransport(jwks_transport(calls, delay=0.2)))
    coalescer = SyncCoalescer()
    barrier = threading.Barrier(10)
    found: list[bool] = []

    def verify() -> None:
        barrier.wait()
        found.append(run_sync(source.keys_flow("a", T0), lambda: client, coalescer).has_kid("a"))

    threads = [threading.Thread(target=verify) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.close()
    assert found == [True] * 10
    assert calls == [JWKS_URI]


def test_async_runner_concurrent_misses_make_one_call() -> None:
    """Ten tasks missing the same JWKS at once: one upstream call."""
    calls: list[str] = []
    body = json.dumps({"keys": [ec_jwk("a")]}).encode()

    async def handle(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        await asyncio.sleep(0.05)
        return httpx.Response(200, content=body)

    async def main() -> list[bool]:
        source = JWKSSource(FetchSettings(), jwks_uri=JWKS_URI)
        coalescer = AsyncCoalescer()
        async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
            flows = [run_async(source.keys_flow("a", T0), lambda: client, coalescer) for _ in range(10)]
            return [keys.has_kid("a") for keys in await asyncio.gather(*flows)]

    assert asyncio.run(main()) == [True] * 10
    assert calls == [JWKS_URI]
