"""Circuit breakers for upstream endpoints: stop calling a server that keeps failing.

No I/O and no clock reads: callers pass ``now``. The runners in ``_runner.py``
ask :meth:`CircuitBreaker.admit` before each upstream call and report the
outcome with :meth:`~CircuitBreaker.succeeded` / :meth:`~CircuitBreaker.failed`.

States (the classic three, as in Resilience4j and Polly):

* **closed**: calls go through; ``failure_threshold`` consecutive failures open it.
* **open**: calls are refused at once (503 with ``Retry-After`` = time left)
  for ``reset_timeout`` seconds, so an outage costs the API microseconds per
  request instead of a connect timeout each, and the authorization server is
  not hammered while it recovers.
* **half-open**: after the timeout, exactly one probe call is let through;
  success closes the breaker, failure opens it for another period. Other
  callers are refused while the probe is out, and a probe that never reports
  back (its task was cancelled) frees the slot after ``reset_timeout``.

A *failure* is a transport error, a timeout, HTTP 5xx or 429: the server's
fault. A 4xx answer is the server working and saying no, so it counts as a
success.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["BreakerSettings", "CircuitBreaker", "CircuitBreakers"]


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """When a breaker opens and for how long.

    Args:
        failure_threshold: consecutive failures that open the breaker; ``0``
            disables breaking. Precedents: Polly 5 (advanced: ratio), Envoy's
            outlier detection 5 consecutive 5xx, Resilience4j 50 % of 100.
        reset_timeout: seconds the breaker stays open before a probe
            (Envoy base ejection 30 s, Polly 30 s, Resilience4j 60 s).
    """

    failure_threshold: int = 5
    reset_timeout: float = 30.0


class CircuitBreaker:
    """One upstream's breaker. Thread-safe; asyncio tasks share it too."""

    __slots__ = ("_failures", "_lock", "_opened_at", "_probe_since", "settings")

    def __init__(self, settings: BreakerSettings) -> None:
        self.settings = settings
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_since: float | None = None
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"`` (as last decided)."""
        if self._opened_at is None:
            return "closed"
        return "half-open" if self._probe_since is not None else "open"

    def admit(self, now: float) -> float | None:
        """``None`` when a call may go ahead; else the seconds until it may be retried."""
        if self._opened_at is None:
            return None
        with self._lock:
            opened = self._opened_at
            if opened is None:
                return None
            reopen = opened + self.settings.reset_timeout
            if now < reopen:
                return reopen - now
            probe = self._probe_since
            if probe is not None and now < probe + self.settings.reset_timeout:
                return probe + self.settings.reset_timeout - now
            self._probe_since = now  # this caller is the probe
            return None

    def succeeded(self) -> None:
        """The call worked: close the breaker and forget past failures."""
        if self._failures == 0 and self._opened_at is None:
            return
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._probe_since = None

    def failed(self, now: float) -> bool:
        """The call failed; returns ``True`` when this failure (re)opened the breaker."""
        threshold = self.settings.failure_threshold
        if threshold <= 0:
            return False
        with self._lock:
            self._failures += 1
            if self._probe_since is not None or (self._opened_at is None and self._failures >= threshold):
                self._opened_at = now
                self._probe_since = None
                return True
            return False


class CircuitBreakers:
    """The breakers of one guard, one per upstream endpoint, made on first use."""

    def __init__(self, settings: BreakerSettings) -> None:
        self.settings = settings
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get(self, endpoint: str) -> CircuitBreaker:
        """The breaker for ``endpoint`` (a URL without its query)."""
        breaker = self._breakers.get(endpoint)
        if breaker is None:
            with self._lock:
                breaker = self._breakers.setdefault(endpoint, CircuitBreaker(self.settings))
        return breaker

    def states(self) -> dict[str, str]:
        """Each known endpoint's state, for stats and health checks."""
        return {endpoint: breaker.state for endpoint, breaker in sorted(self._breakers.items())}
