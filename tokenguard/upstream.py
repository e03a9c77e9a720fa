"""Upstream policy: how a guard treats the servers it calls.

Every call that reaches the network passes :meth:`Upstream.admit` (the
endpoint's circuit breaker) and the purpose's concurrency cap, runs under one
total deadline, and is recorded by :class:`ObservedCall` (span, breaker,
metrics, the last failure's description). The runners (``_runner.py``) apply
this one policy to sync and async calls alike; nothing here performs I/O.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from . import diagnostics
from ._effects import HttpReply, HttpRequest
from ._logtext import public_url
from .errors import ServiceUnavailable
from .telemetry import upstream_span

if TYPE_CHECKING:
    from .breaker import CircuitBreakers
    from .limits import ConcurrencyLimit
    from .metrics import Metrics
    from .shared import SharedStore

__all__ = ["CLIENT_AUTH_PURPOSES", "DEFAULT_DEADLINE", "ObservedCall", "Upstream", "endpoint_of", "missed_deadline"]

#: The total time one upstream call may take (connect + headers + body), and
#: the longest a coalesced waiter waits for it. Precedents: jose and Auth0 5 s
#: for a JWKS fetch (as a per-request timeout); Envoy's remote JWKS 1 s.
DEFAULT_DEADLINE = 5.0

#: Upstreams that authenticate this API: a 401/403 there is outcome ``client_auth_failed``, a failure.
CLIENT_AUTH_PURPOSES = frozenset({"introspection", "token"})


def missed_deadline(request: HttpRequest, deadline: float) -> ServiceUnavailable:
    """The error of a call (or a wait for one) that outlived its total deadline."""
    return ServiceUnavailable(f"{request.purpose} request missed its {deadline:g} s deadline", reason="deadline")


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
        deadline: float = DEFAULT_DEADLINE,
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
        endpoint = endpoint_of(request.url)
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
        breaker = self.breakers.get(endpoint_of(request.url))
        if reply is not None and reply.status in (401, 403) and request.purpose in CLIENT_AUTH_PURPOSES:
            # RFC 7662 §2.1 / RFC 6749 §2.3: the endpoint authenticates *us*; 401/403 is our credentials' fault.
            diagnostics.client_auth_failed(request.purpose, endpoint_of(request.url), reply.status)
            refused = f"{request.purpose} endpoint refused this API's client credentials (HTTP {reply.status})"
            reply, error = None, ServiceUnavailable(refused, reason="client_auth_failed")
        if reply is not None and reply.status < 500 and reply.status != 429:
            breaker.succeeded()
            self.metrics.upstream(request.purpose, "ok", elapsed)
            return
        reason = error.reason if error is not None else f"http_{reply.status if reply else 0}"
        if reply is not None and reply.status >= 500:
            reason = "http_5xx"
            diagnostics.upstream_failed(request.purpose, endpoint_of(request.url), f"answered HTTP {reply.status}")
        status = reply.status if reply is not None else 0
        self.last_failure[endpoint_of(request.url)] = (
            error.description if error is not None else f"{request.purpose} answered HTTP {status}"
        )
        if breaker.failed(self.clock()):
            self.metrics.event("circuit_opened")
        self.metrics.upstream(request.purpose, reason, elapsed)


def endpoint_of(url: str) -> str:
    """``url`` as breakers, spans and metric labels name it."""
    # Breakers, span attributes and metric labels go by endpoint: without the
    # query (variable, it would split one upstream into many) and without any
    # user:password@ a configured URL may carry, which must not reach telemetry.
    return public_url(url)


class ObservedCall:
    """Records one upstream call in a span, the breaker and the metrics; both runners use it."""

    __slots__ = ("_handle", "_request", "_span", "_started", "_upstream", "reply")

    def __init__(self, upstream: Upstream, request: HttpRequest) -> None:
        self._upstream = upstream
        self._request = request
        self._span = upstream_span(request.purpose, request.method, endpoint_of(request.url))
        self._started = 0.0
        self.reply: HttpReply | None = None

    def __enter__(self) -> ObservedCall:
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
