"""Readiness: can this guard verify tokens right now?

A guard starts lazily (nothing is fetched until the first token arrives), so
a misconfigured issuer URL or a wrong introspection secret would otherwise
show only when users are refused. :func:`check_sync` / :func:`check` (also
``guard.check_sync()`` / ``await guard.check()``) do the work a first token
would, up front:

* every configured issuer's metadata (when keys are discovered) and key set;
* the introspection credentials: an unknown, random token must come back
  ``{"active": false}`` (RFC 7662 §2.2), not 401/403 (our credentials refused);
* route scopes against the issuer's ``scopes_supported`` (a warning, not a failure).

Results go into the guard's own caches (a readiness check warms them) and its
metrics (a refused credential counts as ``client_auth_failed``). Documents
still fresh in the cache are not fetched again, so a readiness probe polled
every few seconds does not hammer the issuer.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from . import diagnostics
from ._effects import Flow
from ._logtext import public_url
from ._runner import run_async, run_sync
from .errors import ConfigurationError, InvalidToken, ServiceUnavailable
from .introspection import build_introspection_request, interpret_introspection
from .keys import KeySet

if TYPE_CHECKING:
    from ._guardlike import GuardLike as TokenGuard

__all__ = ["NotReady", "ReadinessCheck", "ReadinessProbe", "ReadinessReport", "check", "check_sync"]

Status = Literal["ok", "warning", "failed"]


@dataclass(frozen=True, slots=True)
class ReadinessCheck:
    """One thing checked: what, against which URL or issuer, and how it went.

    Attributes:
        name: ``metadata``, ``jwks``, ``introspection`` or ``route_scopes``.
        target: the issuer or URL checked.
        status: ``ok``, ``warning`` (works, but something looks wrong) or ``failed``.
        detail: a human sentence: what was found, or the cause of the failure
            (the URL and transport error when there was one).
        seconds: how long the check took.
    """

    name: str
    target: str
    status: Status
    detail: str
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether this check did not fail (a warning is not a failure)."""
        return self.status != "failed"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "target": self.target,
            "status": self.status,
            "detail": self.detail,
            "seconds": round(self.seconds, 4),
        }


class NotReady(RuntimeError):
    """Raised by :meth:`ReadinessReport.raise_for_failure`: the guard cannot verify tokens yet."""

    def __init__(self, report: ReadinessReport) -> None:
        super().__init__("tokenguard is not ready:\n" + str(report))
        self.report = report


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    """Every check a readiness run made. ``ok`` when none failed."""

    checks: tuple[ReadinessCheck, ...]

    @property
    def ok(self) -> bool:
        """No check failed."""
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> tuple[ReadinessCheck, ...]:
        """The checks that failed."""
        return tuple(c for c in self.checks if not c.ok)

    def raise_for_failure(self) -> ReadinessReport:
        """Return ``self`` when ready; otherwise raise.

        Raises:
            NotReady: at least one check failed; its message lists every check.
                At start-up, let it stop the process: it cannot serve.
        """
        if not self.ok:
            raise NotReady(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"ok": ..., "checks": [...]}``."""
        return {"ok": self.ok, "checks": [c.to_dict() for c in self.checks]}

    def __iter__(self) -> Iterator[ReadinessCheck]:
        return iter(self.checks)

    def __str__(self) -> str:
        marks = {"ok": "ok  ", "warning": "WARN", "failed": "FAIL"}
        lines = [f"{marks[c.status]} {c.name:<13} {c.target}: {c.detail}" for c in self.checks]
        return "\n".join(lines) or "nothing to check"


# ---------------------------------------------------------------- plans

#: A planned check: its name, target, the URLs whose failures explain it, and a flow returning ``(status, detail)``.
_Plan = tuple[str, str, Callable[[], list[str]], Callable[[float], Flow[tuple[Status, str]]]]


def _plans(guard: TokenGuard) -> list[_Plan]:
    plans: list[_Plan] = []
    for name, runtime in guard._issuers.items():
        metadata = runtime.metadata
        if metadata is not None:

            def metadata_flow(now: float, metadata: Any = metadata) -> Flow[tuple[Status, str]]:
                document = yield from metadata.metadata_flow(now)
                return "ok", f"issuer matches; {len(document)} members"

            plans.append(("metadata", name, partial(list, metadata.urls), metadata_flow))
        jwks = runtime.jwks
        if jwks is None:
            count = len(runtime.static) if runtime.static is not None else 0
            plans.append(("jwks", name, lambda: [], _static_flow(f"{count} static key(s); nothing to fetch")))
            continue

        def jwks_flow(now: float, jwks: Any = jwks) -> Flow[tuple[Status, str]]:
            keys = yield from jwks.keys_flow(None, now)
            return "ok", _describe_keys(keys)

        def jwks_urls(jwks: Any = jwks, metadata: Any = metadata) -> list[str]:
            urls = [jwks.jwks_uri] if jwks.jwks_uri else []
            if metadata is not None:
                urls += list(metadata.urls)
                uri = (metadata.state.value or {}).get("jwks_uri")
                if isinstance(uri, str):
                    urls.append(uri)
            return urls

        plans.append(("jwks", name, jwks_urls, jwks_flow))
    config = guard._introspection
    if config is not None:
        source = guard._introspection_metadata

        def introspection_flow(now: float) -> Flow[tuple[Status, str]]:
            endpoint = config.endpoint
            if endpoint is None:
                assert source is not None
                endpoint = yield from source.endpoint_flow("introspection_endpoint", now)
                if endpoint is None:
                    return "failed", "the issuer's metadata has no introspection_endpoint"
            # A random token no server has issued: the answer must be {"active": false}.
            probe = "tokenguard-readiness-probe-" + secrets.token_urlsafe(24)
            reply = yield build_introspection_request(probe, endpoint, config)
            try:
                if config.signed_answers:
                    # RFC 9701: the probe asked for a signed answer (as every introspection does); open it alike.
                    from .signed_introspection import answer_kid, open_signed_answer

                    keys_flow = guard._introspection_keys
                    assert keys_flow is not None and config.issuer is not None
                    keys = yield from keys_flow(answer_kid(reply), now)
                    reply = open_signed_answer(reply, keys, issuer=config.issuer, client_id=config.client_id, now=now)
                result = interpret_introspection(reply, config, now)
            except InvalidToken as exc:  # a repeated "active" member, a forged signed answer: nothing to trust
                return "failed", f"{public_url(endpoint)} answered the probe ambiguously ({exc.description})"
            answer = result.answer or {}
            if result.claims is not None or answer.get("active") is not False:
                # Only {"active": false} proves the endpoint checks tokens (RFC 7662 §2.2); an active
                # answer the guard refuses for its iss, exp or token_type is still a server saying yes.
                return "failed", f"{public_url(endpoint)} called an unknown token active: it is not checking tokens"
            return "ok", f"{public_url(endpoint)} accepted client {config.client_id!r} and answered active: false"

        def introspection_urls() -> list[str]:
            urls = [config.endpoint] if config.endpoint else []
            if source is not None:
                urls += list(source.urls)
                uri = (source.state.value or {}).get("introspection_endpoint")
                if isinstance(uri, str):
                    urls.append(uri)
            return urls

        # Reports are logged and may be served: never a user:password@ or query secret in them.
        target = public_url(config.endpoint or config.issuer or "")
        plans.append(("introspection", target, introspection_urls, introspection_flow))
    return plans


def _static_flow(detail: str) -> Callable[[float], Flow[tuple[Status, str]]]:
    def flow(now: float) -> Flow[tuple[Status, str]]:
        return "ok", detail
        yield  # pragma: no cover - makes this a generator

    return flow


def _describe_keys(keys: KeySet) -> str:
    kids = sorted(keys.by_kid)
    shown = ", ".join(kids[:8]) + (f", ... (+{len(kids) - 8})" if len(kids) > 8 else "")
    without = f"; {len(keys.without_kid)} without kid" if keys.without_kid else ""
    return f"{len(keys)} key(s): kid {shown or '-'}{without}"


def _failed(exc: Exception, urls: list[str], since: float) -> tuple[Status, str]:
    detail = exc.description if isinstance(exc, ServiceUnavailable) else str(exc)
    for url in dict.fromkeys(urls):
        cause = diagnostics.failure_since(url, since)
        if cause is not None:
            detail += f" ({public_url(url)}: {cause})"
            break
    return "failed", detail


def _scope_checks(guard: TokenGuard) -> list[ReadinessCheck]:
    checks = []
    scopes = guard.route_scopes
    for source in guard._metadata.values():
        document = source.state.value
        if document is None or not scopes:
            continue
        missing = diagnostics.check_route_scopes(source.issuer, scopes, document)
        if missing:
            checks.append(
                ReadinessCheck(
                    "route_scopes",
                    source.issuer,
                    "warning",
                    f"not in scopes_supported: {', '.join(missing)} (those routes answer 403 to everyone)",
                )
            )
        elif isinstance(document.get("scopes_supported"), list):
            checks.append(ReadinessCheck("route_scopes", source.issuer, "ok", "every route scope is supported"))
    return checks


def check_sync(guard: TokenGuard) -> ReadinessReport:
    """Run every readiness check with blocking I/O (``guard.check_sync()``).

    Never raises for an upstream failure: each failure is a ``failed`` check in
    the report. Call :meth:`ReadinessReport.raise_for_failure` to fail fast.
    """
    checks: list[ReadinessCheck] = []
    since = time.monotonic()  # transport failures from here on explain this run's failures
    for name, target, urls, make in _plans(guard):
        started = time.perf_counter()
        try:
            status, detail = run_sync(make(guard.clock()), guard._sync_client, guard._sync_coalescer, guard._upstream)
        except (ServiceUnavailable, ConfigurationError) as exc:
            status, detail = _failed(exc, urls(), since)
        checks.append(ReadinessCheck(name, target, status, detail, time.perf_counter() - started))
    return ReadinessReport((*checks, *_scope_checks(guard)))


async def check(guard: TokenGuard) -> ReadinessReport:
    """Async twin of :func:`check_sync` (``await guard.check()``)."""
    checks: list[ReadinessCheck] = []
    since = time.monotonic()  # transport failures from here on explain this run's failures
    for name, target, urls, make in _plans(guard):
        started = time.perf_counter()
        try:
            status, detail = await run_async(
                make(guard.clock()), guard._async_client, guard._async_coalescer, guard._upstream
            )
        except (ServiceUnavailable, ConfigurationError) as exc:
            status, detail = _failed(exc, urls(), since)
        checks.append(ReadinessCheck(name, target, status, detail, time.perf_counter() - started))
    return ReadinessReport((*checks, *_scope_checks(guard)))


class ReadinessProbe:
    """The guard's readiness for a probe endpoint: checked at most every ``interval`` seconds.

    A readiness path is polled by orchestrators and is often reachable by
    anyone. Each :func:`check` sends a request to the introspection endpoint
    (and refetches stale documents), so answering every poll with a new
    check would let a flood of probes become a flood on the authorization
    server. The probe keeps its last report for ``interval`` seconds, and
    concurrent polls of a stale report wait for one check together.

    A report that changes (ready to not ready, or another failure) is logged
    once: at ERROR with every check when not ready, at INFO when ready again,
    so the causes are in the logs even where the endpoint shows only ``ok``.

    Args:
        guard: the guard to check.
        interval: seconds a report is reused (default 10).
        clock: monotonic seconds, for tests.

    Raises:
        ConfigurationError: ``interval`` is not a positive number.
    """

    def __init__(
        self, guard: TokenGuard, *, interval: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if isinstance(interval, bool) or not isinstance(interval, int | float) or not 0 < interval < float("inf"):
            raise ConfigurationError(f"interval must be a positive number of seconds, not {interval!r}")
        self.guard = guard
        self.interval = float(interval)
        self._clock = clock
        self._report: ReadinessReport | None = None
        self._checked_at = 0.0
        #: One lock per running event loop; those of closed loops are dropped (see report()).
        self._locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}
        #: How many checks were run (a poll answered from the last report runs none).
        self.checks_run = 0

    def _fresh(self) -> ReadinessReport | None:
        report = self._report
        if report is not None and self._clock() - self._checked_at < self.interval:
            return report
        return None

    async def report(self) -> ReadinessReport:
        """The last report while fresh, else a new one (one check for every caller waiting)."""
        report = self._fresh()
        if report is not None:
            return report
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            # One lock per event loop (an application may run several, one per thread,
            # or asyncio.run() per poll): a lock holds its loop, so those of closed
            # loops go, or every loop that ever polled would stay in memory.
            for old in [old for old in list(self._locks) if old.is_closed()]:
                self._locks.pop(old, None)
            lock = self._locks[loop] = asyncio.Lock()
        async with lock:
            report = self._fresh()
            if report is not None:
                return report
            report = await check(self.guard)
            self.checks_run += 1
            self._remember(report)
            return report

    def _remember(self, report: ReadinessReport) -> None:
        previous, self._report, self._checked_at = self._report, report, self._clock()
        if previous is not None and str(previous) == str(report) and previous.ok == report.ok:
            return
        if not report.ok:
            diagnostics.logger.error("tokenguard is not ready:\n%s", report)
        elif previous is not None:
            diagnostics.logger.info("tokenguard is ready again")
