"""Counters and latency histograms of one guard, for stats, Prometheus and health checks.

No I/O. Labels are fixed, short vocabularies (an upstream's purpose, a
failure reason, an error code), never token or claim values, so a metrics
backend cannot be flooded with series and nothing personal leaves the process.

The hot path (a cache hit) does not touch this module: the guard keeps two
plain int counters for that and merges them into :meth:`Metrics.snapshot`.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["LATENCY_BUCKETS", "LatencyHistogram", "Metrics", "MetricsSnapshot"]

#: Upper bounds (seconds) of the upstream latency histogram; Prometheus' client defaults, trimmed.
LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class LatencyHistogram:
    """Cumulative-bucket histogram, as Prometheus exposes it."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= bound)`` pairs, ending with ``(inf, count)``."""
        running = 0
        pairs = []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self.counts, strict=True):
            running += count
            pairs.append((bound, running))
        return pairs

    def copy(self) -> LatencyHistogram:
        return LatencyHistogram(list(self.counts), self.total, self.count)


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """A consistent copy of a guard's metrics at one moment.

    Attributes:
        cache_hits / cache_misses: in-process result cache lookups.
        events: ``{name: count}``: ``jwt_verified_locally``, ``introspection``,
            ``rejected_<status>``, ``shared_cache_hit`` / ``_miss`` / ``_error``...
        upstream_calls: ``{(purpose, outcome): count}``; outcome is ``ok``
            (any answer below 500 but 429) or a failure reason.
        rejections: ``{(status, reason): count}`` of refused tokens (400/401/503).
        upstream_latency: ``{purpose: histogram}`` of calls that reached the server.
        breakers: ``{endpoint: state}``.
    """

    cache_hits: int
    cache_misses: int
    events: dict[str, int]
    upstream_calls: dict[tuple[str, str], int]
    rejections: dict[tuple[int, str], int]
    upstream_latency: dict[str, LatencyHistogram]
    breakers: dict[str, str]

    def upstream_total(self, purpose: str | None = None) -> int:
        """Upstream calls attempted (all outcomes), for one purpose or all."""
        return sum(n for (p, _), n in self.upstream_calls.items() if purpose is None or p == purpose)


class Metrics:
    """Thread-safe counters; :meth:`snapshot` copies them out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: Counter[str] = Counter()
        self._calls: Counter[tuple[str, str]] = Counter()
        self._rejections: Counter[tuple[int, str]] = Counter()
        self._latency: dict[str, LatencyHistogram] = {}

    def event(self, name: str) -> None:
        """Count one occurrence of ``name``."""
        with self._lock:
            self.events[name] += 1

    def rejection(self, status: int, reason: str) -> None:
        """Count one refused token by status and (fixed-vocabulary) description."""
        with self._lock:
            self._rejections[status, reason] += 1

    def upstream(self, purpose: str, outcome: str, seconds: float | None = None) -> None:
        """Count one upstream call and, when it reached the server, its latency."""
        with self._lock:
            self._calls[purpose, outcome] += 1
            if seconds is not None:
                histogram = self._latency.get(purpose)
                if histogram is None:
                    histogram = self._latency[purpose] = LatencyHistogram()
                histogram.observe(seconds)

    def snapshot(self, hits: int, misses: int, breakers: dict[str, str]) -> MetricsSnapshot:
        """Copy everything out under the lock."""
        with self._lock:
            return MetricsSnapshot(
                cache_hits=hits,
                cache_misses=misses,
                events=dict(self.events),
                upstream_calls=dict(self._calls),
                rejections=dict(self._rejections),
                upstream_latency={k: v.copy() for k, v in self._latency.items()},
                breakers=breakers,
            )
