"""Protection of the provider: circuit breakers, the introspection cap, rate limits; metrics and logs."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from tokenguard import InvalidToken, ServiceUnavailable, TokenGuard
from tokenguard.breaker import BreakerSettings, CircuitBreaker
from tokenguard.limits import IntrospectionLimits, TokenBucket
from tokenguard.testing import Fault, LocalIssuer

from .helpers import Clock

# ---------------------------------------------------------------------- pure parts


def test_breaker_opens_after_consecutive_failures_and_probes_once() -> None:
    breaker = CircuitBreaker(BreakerSettings(failure_threshold=3, reset_timeout=10))
    for _ in range(2):
        assert breaker.admit(0) is None
        assert not breaker.failed(0)
    breaker.succeeded()  # a success resets the count
    for _ in range(2):
        breaker.failed(0)
    assert breaker.state == "closed"
    assert breaker.failed(1) is True
    assert breaker.state == "open"
    assert breaker.admit(5) == pytest.approx(6)
    assert breaker.admit(11) is None  # the probe
    assert breaker.state == "half-open"
    assert breaker.admit(11.5) is not None  # only one probe at a time
    assert breaker.failed(12) is True  # the probe failed: open again
    assert breaker.admit(13) == pytest.approx(9)
    assert breaker.admit(22) is None
    breaker.succeeded()
    assert breaker.state == "closed"
    assert breaker.admit(22) is None


def test_breaker_probe_that_never_reports_frees_the_slot() -> None:
    breaker = CircuitBreaker(BreakerSettings(failure_threshold=1, reset_timeout=10))
    breaker.failed(0)
    assert breaker.admit(10) is None  # probe goes out and is cancelled
    assert breaker.admit(15) is not None
    assert breaker.admit(20) is None  # another probe after a further timeout


def test_breaker_threshold_zero_never_opens() -> None:
    breaker = CircuitBreaker(BreakerSettings(failure_threshold=0))
    for _ in range(100):
        assert not breaker.failed(0)
    assert breaker.admit(0) is None


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=2, burst=3, now=0)
    assert [bucket.take(0) for _ in range(3)] == [None, None, None]
    assert bucket.take(0) == pytest.approx(0.5)
    assert bucket.take(0.5) is None
    assert bucket.take(0.5) == pytest.approx(0.5)
    assert [bucket.take(100) for _ in range(4)][-1] is not None  # refills to burst, not beyond


# ---------------------------------------------------------------------- against a real issuer


def test_breaker_stops_introspection_calls_then_probes(issuer: LocalIssuer) -> None:
    clock = Clock()
    guard = issuer.guard(clock=clock, breaker=BreakerSettings(failure_threshold=3, reset_timeout=30))
    issuer.faults["/introspect"] = Fault(status=503)
    for _ in range(3):
        with pytest.raises(ServiceUnavailable, match="HTTP 503"):
            guard.verify_sync(issuer.issue_opaque())
    assert issuer.requests["/introspect"] == 3
    for _ in range(20):
        with pytest.raises(ServiceUnavailable, match="paused after repeated failures") as info:
            guard.verify_sync(issuer.issue_opaque())
        assert 1 <= info.value.retry_after <= 30
    assert issuer.requests["/introspect"] == 3, "an open breaker does not call the server"
    assert guard.metrics().breakers[issuer.introspection_endpoint] == "open"
    del issuer.faults["/introspect"]
    clock.now += 31
    assert guard.verify_sync(issuer.issue_opaque()).subject == "user-1"  # the probe
    assert guard.metrics().breakers[issuer.introspection_endpoint] == "closed"
    assert issuer.requests["/introspect"] == 4


def test_breaker_on_timeouts_answers_503_fast(issuer: LocalIssuer) -> None:
    guard = issuer.guard(timeout=0.2, breaker=BreakerSettings(failure_threshold=2, reset_timeout=60))
    issuer.faults["/introspect"] = Fault(status=0, delay=1.0)
    for _ in range(2):
        with pytest.raises(ServiceUnavailable, match="timed out"):
            guard.verify_sync(issuer.issue_opaque())
    started = time.perf_counter()
    with pytest.raises(ServiceUnavailable) as info:
        guard.verify_sync(issuer.issue_opaque())
    assert info.value.reason == "circuit_open"
    assert time.perf_counter() - started < 0.15, "no timeout is waited out while the breaker is open"
    snapshot = guard.metrics()
    assert snapshot.upstream_calls[("introspection", "timeout")] == 2
    assert snapshot.upstream_calls[("introspection", "circuit_open")] == 1


def test_open_jwks_breaker_keeps_last_good_keys(issuer: LocalIssuer) -> None:
    clock = Clock()
    guard = issuer.guard(introspection=False, clock=clock, breaker=BreakerSettings(failure_threshold=1))
    token = issuer.issue()
    guard.verify_sync(token)
    issuer.faults["/jwks"] = Fault(status=500)
    issuer.rotate("RS256")
    with pytest.raises(Exception, match="kid|key"):
        guard.verify_sync(issuer.issue())  # unknown kid: refetch fails, breaker opens
    clock.now += 2
    # Tokens signed by the last good keys still verify, with no call made.
    calls = issuer.requests["/jwks"]
    guard.verify_sync(issuer.issue(kid=issuer.key("ES256").kid, alg="ES256"))
    assert issuer.requests["/jwks"] == calls


def test_introspection_cap_sheds_load_with_503(issuer: LocalIssuer) -> None:
    guard = issuer.guard(introspection_limits=IntrospectionLimits(max_concurrent=2, max_wait=0.05))
    issuer.faults["/introspect"] = Fault(status=0, delay=0.4)
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def call() -> None:
        token = issuer.issue_opaque()
        barrier.wait()
        try:
            guard.verify_sync(token)
            outcomes.append("ok")
        except ServiceUnavailable as exc:
            assert exc.retry_after >= 1
            outcomes.append(exc.reason)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("ok") == 2
    assert outcomes.count("overloaded") == 6
    assert issuer.peak_concurrency["/introspect"] == 2
    assert issuer.requests["/introspect"] == 2


def test_introspection_cap_async(issuer: LocalIssuer) -> None:
    issuer.faults["/introspect"] = Fault(status=0, delay=0.3)

    async def run() -> list[str]:
        guard = issuer.guard(introspection_limits=IntrospectionLimits(max_concurrent=3, max_wait=0.05))

        async def one() -> str:
            try:
                await guard.verify(issuer.issue_opaque())
                return "ok"
            except ServiceUnavailable as exc:
                return exc.reason

        try:
            return await asyncio.gather(*(one() for _ in range(10)))
        finally:
            await guard.aclose()

    outcomes = asyncio.run(run())
    assert outcomes.count("ok") == 3
    assert outcomes.count("overloaded") == 7
    assert issuer.peak_concurrency["/introspect"] <= 3


def test_random_token_flood_is_bounded_by_the_rate_limit(issuer: LocalIssuer) -> None:
    clock = Clock()
    guard = issuer.guard(clock=clock, introspection_limits=IntrospectionLimits(rate=5, burst=5))
    refused = 0
    for i in range(200):
        clock.now += 0.01  # 200 requests in 2 s
        try:
            guard.verify_sync(f"random-garbage-token-{i}")
        except ServiceUnavailable as exc:
            assert exc.reason == "rate_limited"
            refused += 1
        except InvalidToken:
            continue  # an inactive token: the expected 401
    allowed = 5 + 2 * 5
    assert issuer.requests["/introspect"] <= allowed
    assert refused >= 200 - allowed
    # Cached answers still flow: the limit only guards upstream calls.
    good = issuer.issue_opaque()
    clock.now += 1
    guard.verify_sync(good)
    for _ in range(50):
        guard.verify_sync(good)


def test_per_client_rate_limit_isolates_the_noisy_client(issuer: LocalIssuer) -> None:
    clock = Clock()
    limits = IntrospectionLimits(per_client_rate=1, per_client_burst=2)
    guard = issuer.guard(clock=clock, introspection_limits=limits)
    outcomes = []
    for _ in range(5):
        try:
            guard.verify_sync(issuer.issue_opaque(), client="203.0.113.9")
            outcomes.append("ok")
        except ServiceUnavailable:
            outcomes.append("limited")
    assert outcomes == ["ok", "ok", "limited", "limited", "limited"]
    assert guard.verify_sync(issuer.issue_opaque(), client="198.51.100.1").subject == "user-1"
    clock.now += 1.0
    assert guard.verify_sync(issuer.issue_opaque(), client="203.0.113.9").subject == "user-1"


def test_per_client_limit_through_the_asgi_middleware(issuer: LocalIssuer) -> None:
    import httpx
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tokenguard.starlette import TokenGuardMiddleware

    from .conftest import UvicornServer

    guard = issuer.guard(introspection_limits=IntrospectionLimits(per_client_rate=0.01, per_client_burst=1))
    app = Starlette(routes=[Route("/", lambda request: JSONResponse({"ok": True}))])
    app.add_middleware(TokenGuardMiddleware, guard=guard)
    with UvicornServer(app) as server:
        first = httpx.get(server.url, headers={"Authorization": f"Bearer {issuer.issue_opaque()}"})
        second = httpx.get(server.url, headers={"Authorization": f"Bearer {issuer.issue_opaque()}"})
    assert first.status_code == 200
    assert second.status_code == 503
    assert int(second.headers["retry-after"]) >= 1
    assert "www-authenticate" not in second.headers


# ---------------------------------------------------------------------- metrics, logs, exporters


def _exercise(issuer: LocalIssuer, guard: TokenGuard) -> None:
    token = issuer.issue(scope="read")
    guard.verify_sync(token)
    guard.verify_sync(token)
    guard.verify_sync(issuer.issue_opaque())
    revoked = issuer.issue_opaque()
    issuer.revoke(revoked)
    with pytest.raises(Exception, match="not active"):
        guard.verify_sync(revoked)


def test_metrics_count_calls_latency_and_rejections(issuer: LocalIssuer) -> None:
    guard = issuer.guard()
    _exercise(issuer, guard)
    snapshot = guard.metrics()
    assert snapshot.cache_hits == 1
    # RFC 8414's location first (404 here: a working server saying no), then OIDC's.
    assert snapshot.upstream_calls[("discovery", "ok")] == 2
    assert snapshot.upstream_calls[("jwks", "ok")] == 1
    assert snapshot.upstream_calls[("introspection", "ok")] == 2
    assert snapshot.upstream_latency["introspection"].count == 2
    assert snapshot.upstream_latency["introspection"].total > 0
    assert snapshot.rejections[(401, "token is not active")] == 1
    assert guard.stats["upstream_calls"] == 5
    assert guard.stats["upstream_failures"] == 0


def test_prometheus_exposition(issuer: LocalIssuer) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from tokenguard.prometheus import TokenGuardCollector

    guard = issuer.guard()
    _exercise(issuer, guard)
    registry = CollectorRegistry()
    registry.register(TokenGuardCollector(guard, labels={"api": "books"}))
    text = generate_latest(registry).decode()
    assert 'tokenguard_cache_lookups_total{api="books",result="hit"} 1.0' in text
    assert 'tokenguard_upstream_calls_total{api="books",outcome="ok",upstream="introspection"} 2.0' in text
    assert 'tokenguard_upstream_latency_seconds_count{api="books",upstream="introspection"} 2.0' in text
    assert 'tokenguard_upstream_latency_seconds_bucket{api="books",le="+Inf",upstream="jwks"} 1.0' in text
    assert 'tokenguard_rejections_total{api="books",reason="token is not active",status="401"} 1.0' in text
    assert f'tokenguard_circuit_open{{api="books",endpoint="{issuer.introspection_endpoint}"}} 0.0' in text


def test_opentelemetry_spans_for_upstream_calls(issuer: LocalIssuer) -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:  # pragma: no cover - set once per process
        pytest.fail("another test set a global tracer provider first")
    guard = issuer.guard()
    opaque = issuer.issue_opaque()
    guard.verify_sync(opaque)
    issuer.faults["/introspect"] = Fault(status=502)
    with pytest.raises(ServiceUnavailable):
        guard.verify_sync(issuer.issue_opaque())
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert {"tokenguard discovery", "tokenguard introspection"} <= set(spans)
    failed = [s for s in exporter.get_finished_spans() if s.name == "tokenguard introspection"][-1]
    assert failed.attributes is not None and failed.attributes["http.response.status_code"] == 502
    assert failed.status.status_code == trace.StatusCode.ERROR
    for span in exporter.get_finished_spans():
        assert opaque not in str(span.attributes)
        assert issuer.client_secret not in str(span.attributes)


def test_rejections_are_logged_with_a_fingerprint_never_the_token(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    guard = issuer.guard()
    token = issuer.issue(audience="https://other.test")
    caplog.set_level(logging.DEBUG, logger="tokenguard")
    with pytest.raises(Exception, match="audience"):
        guard.verify_sync(token)
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "token_rejected"]
    assert record.status == 401  # type: ignore[attr-defined]
    assert len(record.token_fingerprint) == 8  # type: ignore[attr-defined]
    assert "audience" in record.reason  # type: ignore[attr-defined]
    for logged in caplog.records:
        assert token not in logged.getMessage()
        assert token.split(".")[2] not in logged.getMessage()


def test_timeouts_take_an_httpx_timeout_and_default_to_2s_connect(issuer: LocalIssuer) -> None:
    import httpx

    from tokenguard.guard import DEFAULT_TIMEOUT

    assert (DEFAULT_TIMEOUT.connect, DEFAULT_TIMEOUT.read) == (2.0, 5.0)
    guard = issuer.guard(timeout=httpx.Timeout(5.0, read=0.2))
    issuer.faults["/introspect"] = Fault(status=0, delay=1.0)
    started = time.perf_counter()
    with pytest.raises(ServiceUnavailable, match="timed out") as info:
        guard.verify_sync(issuer.issue_opaque())
    assert info.value.reason == "timeout"
    assert time.perf_counter() - started < 0.9, "the read timeout, not the server's delay, ended the call"


def test_endpoint_labels_carry_no_query_or_credentials() -> None:
    from tokenguard.upstream import endpoint_of as _endpoint

    assert _endpoint("https://rs:s3cret@idp.test/oauth/introspect?x=1") == "https://idp.test/oauth/introspect"
    assert _endpoint("https://idp.test/a@b/jwks") == "https://idp.test/a@b/jwks"
    assert _endpoint("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
