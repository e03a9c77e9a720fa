"""Readiness: ``guard.check_sync()`` / ``await guard.check()`` against real issuers, healthy and broken."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tokenguard import ConfigurationError, FetchSettings, NotReady, ReadinessReport, TokenGuard, diagnostics
from tokenguard.testing import Fault, LocalIssuer

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _fresh_limits() -> Iterator[None]:
    diagnostics.reset()
    yield
    diagnostics.reset()


def _by_name(report: ReadinessReport) -> dict[str, Any]:
    return {check.name: check for check in report}


def test_healthy_local_issuer(issuer: LocalIssuer) -> None:
    """Metadata, keys and introspection credentials all pass; the caches are warm afterwards."""
    guard = issuer.guard()
    report = guard.check_sync()
    assert report.ok, str(report)
    checks = _by_name(report)
    assert [c.status for c in report] == ["ok", "ok", "ok"]
    assert "rs256-1" in checks["jwks"].detail
    assert "active: false" in checks["introspection"].detail
    assert issuer.introspection_requests[-1]["token"].startswith("tokenguard-readiness-probe-")
    before = dict(issuer.requests)
    guard.verify_sync(issuer.issue())  # keys already at hand: nothing fetched
    assert dict(issuer.requests) == before
    assert report.raise_for_failure() is report
    assert report.to_dict()["ok"] is True


def test_async_twin(issuer: LocalIssuer) -> None:
    """``await guard.check()`` reports the same checks as the sync one."""
    guard = issuer.guard()

    async def run() -> ReadinessReport:
        try:
            return await guard.check()
        finally:
            await guard.aclose()

    report = asyncio.run(run())
    assert report.ok and [c.name for c in report] == ["metadata", "jwks", "introspection"]


def test_wrong_introspection_secret(issuer: LocalIssuer) -> None:
    """An introspection endpoint answering 401 to the probe fails the check, naming the credentials."""
    guard = issuer.guard(client_secret="wrong")
    report = guard.check_sync()
    assert not report.ok
    [failure] = report.failures
    assert failure.name == "introspection"
    assert failure.detail == "introspection endpoint refused this API's client credentials (HTTP 401)"
    assert guard.metrics().upstream_calls[("introspection", "client_auth_failed")] == 1
    with pytest.raises(NotReady, match="FAIL introspection"):
        report.raise_for_failure()


def test_unreachable_issuer_names_url_and_os_error() -> None:
    """Nothing listening: metadata and keys fail, with the URL tried and the connection error."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    guard = TokenGuard.from_issuer(f"http://127.0.0.1:{port}/oidc", audience="https://api.test")
    report = guard.check_sync()
    assert [c.status for c in report] == ["failed", "failed"]
    detail = _by_name(report)["metadata"].detail
    assert detail.startswith("discovery request failed (http://127.0.0.1:")
    assert "ConnectError" in detail
    guard.close()


def test_issuer_with_a_trailing_slash(issuer: LocalIssuer) -> None:
    """The configured issuer differs from the metadata's by a slash: metadata fails, saying so."""
    guard = TokenGuard.from_issuer(issuer.issuer + "/", audience="https://api.test", fetch=FetchSettings())
    report = guard.check_sync()
    assert _by_name(report)["metadata"].detail == "authorization server metadata names another issuer"
    assert not report.ok
    guard.close()


def test_broken_jwks(issuer: LocalIssuer) -> None:
    """A JWKS endpoint answering 500: metadata passes, keys fail."""
    issuer.faults["/jwks"] = Fault(status=500)
    report = issuer.guard(introspection=False).check_sync()
    checks = _by_name(report)
    assert checks["metadata"].ok and not checks["jwks"].ok
    assert "500" in checks["jwks"].detail


def test_introspection_calling_a_random_token_active(issuer: LocalIssuer) -> None:
    """A server that calls any token active is not checking tokens: failed."""
    issuer.faults["/introspect"] = Fault(status=200, body=b'{"active": true, "sub": "x"}')
    report = issuer.guard().check_sync()
    assert "called an unknown token active" in _by_name(report)["introspection"].detail
    assert not report.ok


def test_real_provider(oidc_provider: Any) -> None:
    """The npm oidc-provider: every check passes, and a misspelt route scope is a warning."""
    guard = oidc_provider.guard()
    guard.requires("raed")
    report = guard.check_sync()
    assert report.ok, str(report)
    statuses = {c.name: c.status for c in report}
    assert statuses == {"metadata": "ok", "jwks": "ok", "introspection": "ok", "route_scopes": "warning"}
    assert "raed" in _by_name(report)["route_scopes"].detail
    guard.close()


def test_real_provider_wrong_secret(oidc_provider: Any) -> None:
    """The npm oidc-provider refuses a wrong introspection secret: the check fails."""
    guard = TokenGuard.from_issuer(
        oidc_provider.issuer,
        audience="https://api.test/",
        client_id="rs-basic",
        client_secret="not-the-secret",
        fetch=FetchSettings(),
    )
    report = guard.check_sync()
    assert [f.name for f in report.failures] == ["introspection"]
    assert "client credentials" in report.failures[0].detail
    guard.close()


def _start(app: Any) -> Any:
    """Enter and leave the app's lifespan as a server would; return what ``app.state`` holds."""

    async def run() -> Any:
        async with app.router.lifespan_context(app):
            return app.state.tokenguard_readiness

    return asyncio.run(run())


def test_starlette_lifespan_fails_fast(issuer: LocalIssuer) -> None:
    """The lifespan helper refuses to start a FastAPI app whose guard is not ready; starts a ready one."""
    from fastapi import FastAPI

    from tokenguard.starlette import readiness_lifespan

    assert _start(FastAPI(lifespan=readiness_lifespan(issuer.guard()))).ok
    with pytest.raises(NotReady, match="FAIL introspection"):
        _start(FastAPI(lifespan=readiness_lifespan(issuer.guard(client_secret="wrong"))))
    tolerant = FastAPI(lifespan=readiness_lifespan(issuer.guard(client_secret="wrong"), fail_fast=False))
    assert not _start(tolerant).ok


def test_readiness_endpoint_under_uvicorn(issuer: LocalIssuer) -> None:
    """The readiness endpoint answers 200 with the report when ready, 503 when not."""
    from fastapi import FastAPI

    from tokenguard.starlette import readiness_endpoint

    from .conftest import UvicornServer

    app = FastAPI()
    app.add_route("/ready", readiness_endpoint(issuer.guard()))
    app.add_route("/broken", readiness_endpoint(issuer.guard(client_secret="wrong"), details=True))
    with UvicornServer(app) as server:
        ready = httpx.get(server.url + "/ready")
        broken = httpx.get(server.url + "/broken")
    assert ready.status_code == 200 and ready.json() == {"ok": True}  # no details unless asked
    assert ready.headers["cache-control"] == "no-store"
    assert broken.status_code == 503
    assert [c["status"] for c in broken.json()["checks"]] == ["ok", "ok", "failed"]


def test_readiness_endpoint_checks_once_per_interval_however_often_polled(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    """Fifty concurrent polls and fifty more: one introspection probe upstream; the failure is logged once."""
    from starlette.applications import Starlette

    from tokenguard.starlette import readiness_endpoint

    app = Starlette()
    app.add_route("/broken", readiness_endpoint(issuer.guard(client_secret="wrong"), interval=60))
    before = issuer.requests["/introspect"]

    async def poll() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            first = await asyncio.gather(*(client.get("/broken") for _ in range(50)))
            return [*first, *[await client.get("/broken") for _ in range(50)]]

    with caplog.at_level(logging.ERROR, logger="tokenguard"):
        answers = asyncio.run(poll())
    assert {a.status_code for a in answers} == {503}
    assert {tuple(a.json()) for a in answers} == {("ok",)}  # the causes stay in the logs
    assert issuer.requests["/introspect"] - before == 1
    not_ready = [r for r in caplog.records if "not ready" in r.getMessage()]
    assert len(not_ready) == 1 and "introspection" in not_ready[0].getMessage()


@pytest.mark.parametrize("interval", [0, -1, "10", float("nan"), float("inf"), True])
def test_readiness_interval_is_validated(interval: Any) -> None:
    """A probe interval that is not a positive number of seconds is refused at construction, by name."""
    from tokenguard.starlette import readiness_endpoint

    guard = TokenGuard.from_keys(issuer="https://issuer.example", audience="api", hmac_keys={None: "k" * 32})
    with pytest.raises(ConfigurationError, match="interval must be a positive number of seconds"):
        readiness_endpoint(guard, interval=interval)
    with pytest.raises(ConfigurationError, match="details must be True or False"):
        readiness_endpoint(guard, details="yes")  # type: ignore[arg-type]


def test_flask_command_and_startup_check(issuer: LocalIssuer) -> None:
    """``flask tokenguard-check`` exits 0 when ready and 1 when not; check_at_startup raises when asked."""
    from flask import Flask

    from tokenguard.flask import check_at_startup, register_check_command

    app = Flask("ready")
    register_check_command(app, issuer.guard())
    result = app.test_cli_runner().invoke(args=["tokenguard-check"])
    assert result.exit_code == 0, result.output
    assert "ok   introspection" in result.output

    broken = Flask("broken")
    register_check_command(broken, issuer.guard(client_secret="wrong"))
    result = broken.test_cli_runner().invoke(args=["tokenguard-check", "--json"])
    assert result.exit_code == 1
    assert '"status": "failed"' in result.output

    with pytest.raises(NotReady):
        check_at_startup(issuer.guard(client_secret="wrong"))
    check_at_startup(issuer.guard(client_secret="wrong"), fail_fast=False)
    check_at_startup(issuer.guard())


def test_static_keys_need_no_network() -> None:
    """A guard with static keys is ready without any fetch; the report says so."""
    guard = TokenGuard.from_keys(
        issuer="https://idp.example", audience="https://api.test", hmac_keys={None: "k" * 64}, algorithms=["HS256"]
    )
    report = guard.check_sync()
    assert report.ok
    assert [(c.name, c.detail) for c in report] == [("jwks", "1 static key(s); nothing to fetch")]


@pytest.mark.parametrize(
    "body",
    [
        b'{"active": true, "sub": "x", "iss": "https://elsewhere.example"}',  # active, but refused for its iss
        b'{"active": true, "sub": "x", "exp": "soon"}',  # active, but refused for a malformed exp
        b'{"active": true, "sub": "x", "token_type": "refresh_token"}',  # active, but not an access token
        b'{"active": false, "active": true}',  # a repeated member: two parsers read it differently
    ],
)
def test_introspection_answering_active_in_any_shape_fails(issuer: LocalIssuer, body: bytes) -> None:
    """An active answer for a random token fails, even one the guard would refuse for other reasons.

    The readiness probe asks about a token no server issued; only ``{"active": false}`` proves the
    endpoint checks tokens. Nothing raises out of ``check_sync()`` / ``check()``: a lying server is a failed check.
    """
    issuer.faults["/introspect"] = Fault(status=200, body=body)
    with issuer.guard() as guard:
        report = guard.check_sync()
        report_async = asyncio.run(guard.check())
    for result in (report, report_async):
        check = _by_name(result)["introspection"]
        assert check.status == "failed", check
        assert "answered active: false" not in check.detail
        assert not result.ok


def test_readiness_report_and_its_log_line_never_show_endpoint_credentials(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    """An introspection endpoint configured with user:password@ and a query secret: the report (logged at
    ERROR by the probe, raised in NotReady, served with details=True) names it as public_url shows it."""
    from tokenguard import Introspection
    from tokenguard.readiness import ReadinessProbe

    host = issuer.introspection_endpoint.split("://", 1)[1]
    # httpx sends a URL's user:password@ as Basic credentials of its own: the second endpoint has the query only.
    endpoints = {
        "wrong": f"http://svc:pa55word@{host}?api_key=pa55word",
        issuer.client_secret: f"http://{host}?k=pa55word",
    }
    for secret, endpoint in endpoints.items():
        introspection = Introspection(endpoint=endpoint, client_id=issuer.client_id, client_secret=secret)
        guard = TokenGuard(introspection=introspection)

        async def run(guard: TokenGuard = guard) -> ReadinessReport:
            try:
                return await ReadinessProbe(guard).report()
            finally:
                await guard.aclose()

        with caplog.at_level(logging.INFO, logger="tokenguard"):
            report = asyncio.run(run())
        assert report.ok is (secret != "wrong"), str(report)
        assert "/introspect" in str(report)
        assert "pa55word" not in str(report) and "pa55word" not in str(report.to_dict())
    assert any("not ready" in r.getMessage() for r in caplog.records)
    assert not any("pa55word" in r.getMessage() for r in caplog.records)


def test_probe_keeps_no_closed_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe polled from many event loops in turn (asyncio.run per poll, one loop per thread) keeps no
    lock or loop of those that are closed: memory stays flat however many loops came and went."""
    import gc
    import weakref

    from tokenguard import readiness

    async def slow_check(guard: object) -> ReadinessReport:
        await asyncio.sleep(0.001)  # concurrent polls wait on the probe's lock meanwhile
        return ReadinessReport(())

    monkeypatch.setattr(readiness, "check", slow_check)
    now = [0.0]
    probe = readiness.ReadinessProbe(object(), interval=1, clock=lambda: now[0])  # type: ignore[arg-type]
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def poll() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        await asyncio.gather(probe.report(), probe.report())

    for _ in range(20):
        now[0] += 2  # stale: every loop runs a check
        asyncio.run(poll())
    gc.collect()
    assert probe.checks_run == 20
    assert sum(ref() is not None for ref in loops) <= 1  # the last loop at most, until another one checks
