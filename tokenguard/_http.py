"""Former home of the effects, the runners and the upstream policy; kept so old imports work.

The code lives in three modules now, one concept each:

* ``_effects.py``: the effects a flow yields (pure data);
* ``_runner.py``: the sync and async runners and coalescers, the only code
  that performs effects;
* ``upstream.py``: breakers, concurrency caps, deadline and metrics per call.
"""

from __future__ import annotations

from ._effects import (
    DEFAULT_MAX_RESPONSE_BYTES,
    CallVerifier,
    Effect,
    Flow,
    GuardFlow,
    HttpReply,
    HttpRequest,
    SharedEffect,
    json_object,
)
from ._runner import USER_AGENT, AsyncCoalescer, SyncCoalescer, fetch_async, fetch_sync, run_async, run_sync
from .upstream import CLIENT_AUTH_PURPOSES, Upstream
from .upstream import endpoint_of as _endpoint

__all__ = [
    "CLIENT_AUTH_PURPOSES",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "USER_AGENT",
    "AsyncCoalescer",
    "CallVerifier",
    "Effect",
    "Flow",
    "GuardFlow",
    "HttpReply",
    "HttpRequest",
    "SharedEffect",
    "SyncCoalescer",
    "Upstream",
    "_endpoint",
    "fetch_async",
    "fetch_sync",
    "json_object",
    "run_async",
    "run_sync",
]
