"""A Prometheus collector for a guard's metrics (``pip install 'tokenguard[prometheus]'``).

::

    from prometheus_client import REGISTRY
    from tokenguard.prometheus import TokenGuardCollector

    REGISTRY.register(TokenGuardCollector(guard))

The collector reads :meth:`TokenGuard.metrics` at scrape time, so requests
pay nothing for it. Series (all labels are fixed vocabularies):

* ``tokenguard_cache_lookups_total{result="hit"|"miss"}``
* ``tokenguard_events_total{event}``: local verifications, introspections,
  shared-cache hits and misses, breaker openings...
* ``tokenguard_rejections_total{status, reason}``
* ``tokenguard_upstream_calls_total{upstream, outcome}``
* ``tokenguard_upstream_latency_seconds{upstream}`` (histogram)
* ``tokenguard_circuit_open{endpoint}``: 1 open, 0.5 half-open, 0 closed
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
except ImportError:  # pragma: no cover - depends on the environment
    from .errors import ConfigurationError

    raise ConfigurationError(
        "the Prometheus exporter needs prometheus-client: pip install 'tokenguard[prometheus]'"
    ) from None

if TYPE_CHECKING:
    from .guard import TokenGuard

__all__ = ["TokenGuardCollector"]

_BREAKER_VALUES = {"closed": 0.0, "half-open": 0.5, "open": 1.0}


class TokenGuardCollector:
    """A ``prometheus_client`` custom collector for one guard.

    Args:
        guard: the guard to report on.
        namespace: prefix of every series name.
        labels: constant labels added to every series, e.g. ``{"api": "books"}``
            when one process runs several guards.
    """

    def __init__(
        self, guard: TokenGuard, *, namespace: str = "tokenguard", labels: dict[str, str] | None = None
    ) -> None:
        self.guard = guard
        self.namespace = namespace
        self.labels = dict(labels or {})

    def describe(self) -> list[Any]:
        # Declaring no series up front lets the registry accept this collector
        # without calling collect() at registration time.
        return []

    def collect(self) -> Iterator[Any]:
        """The current values, as metric families."""
        snapshot = self.guard.metrics()
        ns = self.namespace
        const = list(self.labels)
        values = list(self.labels.values())

        lookups = CounterMetricFamily(
            f"{ns}_cache_lookups", "In-process result cache lookups.", labels=[*const, "result"]
        )
        lookups.add_metric([*values, "hit"], snapshot.cache_hits)
        lookups.add_metric([*values, "miss"], snapshot.cache_misses)
        yield lookups

        events = CounterMetricFamily(f"{ns}_events", "Verification events by kind.", labels=[*const, "event"])
        for name, count in sorted(snapshot.events.items()):
            events.add_metric([*values, name], count)
        yield events

        rejections = CounterMetricFamily(
            f"{ns}_rejections", "Refused tokens by HTTP status and reason.", labels=[*const, "status", "reason"]
        )
        for (status, reason), count in sorted(snapshot.rejections.items()):
            rejections.add_metric([*values, str(status), reason], count)
        yield rejections

        calls = CounterMetricFamily(
            f"{ns}_upstream_calls",
            "Calls to the authorization server by outcome.",
            labels=[*const, "upstream", "outcome"],
        )
        for (purpose, outcome), count in sorted(snapshot.upstream_calls.items()):
            calls.add_metric([*values, purpose, outcome], count)
        yield calls

        latency = HistogramMetricFamily(
            f"{ns}_upstream_latency_seconds", "Latency of calls that reached the server.", labels=[*const, "upstream"]
        )
        for purpose, histogram in sorted(snapshot.upstream_latency.items()):
            buckets = [("+Inf" if bound == float("inf") else repr(bound), n) for bound, n in histogram.cumulative()]
            latency.add_metric([*values, purpose], buckets, sum_value=histogram.total)
        yield latency

        breakers = GaugeMetricFamily(
            f"{ns}_circuit_open",
            "Circuit breaker per endpoint: 1 open, 0.5 half-open, 0 closed.",
            labels=[*const, "endpoint"],
        )
        for endpoint, state in snapshot.breakers.items():
            breakers.add_metric([*values, endpoint], _BREAKER_VALUES[state])
        yield breakers
