"""A guard's counters as users read them, and the log line of a refused token.

No I/O beyond logging. The cache-hit and cache-miss counts are plain ints on
the guard (a ``Counter`` update would cost more than the hit itself); they
join every other counter here.
"""

from __future__ import annotations

import logging

from .cache import TokenHasher
from .errors import ServiceUnavailable, TokenError
from .metrics import Metrics, MetricsSnapshot

__all__ = ["log_rejection", "stats_of"]

logger = logging.getLogger("tokenguard")


def stats_of(snapshot: MetricsSnapshot) -> dict[str, int]:
    """The flat counters of :attr:`TokenGuard.stats` from a metrics snapshot."""
    failures = sum(n for (_, outcome), n in snapshot.upstream_calls.items() if outcome != "ok")
    return {
        "cache_hit": snapshot.cache_hits,
        "cache_miss": snapshot.cache_misses,
        **snapshot.events,
        "upstream_calls": snapshot.upstream_total(),
        "upstream_failures": failures,
    }


def log_rejection(metrics: Metrics, hasher: TokenHasher, max_token_bytes: int, token: str, error: TokenError) -> None:
    """Count a refused token and log it by fingerprint (never the token):
    DEBUG for a refusal, INFO for a 503."""
    reason = error.description or error.error_code or "no credentials"
    metrics.rejection(error.status_code, reason)
    level = logging.INFO if isinstance(error, ServiceUnavailable) else logging.DEBUG
    if logger.isEnabledFor(level):
        # A fingerprint, never the token: enough to correlate log lines.
        fingerprint = TokenHasher.fingerprint(hasher.cache_key(token[: max_token_bytes + 1]))
        logger.log(
            level,
            "token %s refused: %s",
            fingerprint,
            reason,
            extra={
                "event": "token_rejected",
                "token_fingerprint": fingerprint,
                "status": error.status_code,
                "reason": reason,
            },
        )
