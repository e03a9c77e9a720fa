"""How a guard obtains an introspection answer about a token (RFC 7662), with its result store.

One answer per token, whoever asks: another process's answer read from the
shared store (re-checked with this guard's settings), else one call to the
endpoint, elected across processes by a short lock and coalesced within this
one, after the rate limits. An inactive answer is kept briefly as a rejection.
Pure flow: it yields effects (``_effects.py``) and performs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._effects import Flow
from .errors import InvalidToken, ServiceUnavailable
from .facts import introspection_fact, read_introspection_fact
from .introspection import Introspection, IntrospectionResult, introspect_flow
from .limits import RateLimiter
from .metrics import Metrics
from .results import rejection_entry
from .sources import MetadataSource
from .store import ResultStore

if TYPE_CHECKING:
    from .keys import KeySet

__all__ = ["IntrospectionRoute", "introspection_scope"]


def introspection_scope(config: Introspection) -> str:
    """Who establishes an introspection fact: the endpoint (or its issuer) and the
    client asking, since an authorization server may answer each client differently;
    and whether the answer had to be signed (RFC 9701): a plain answer shared by a
    guard that takes one must not stand in for the signed answer another requires."""
    signed = "signed" if config.signed_answers else "plain"
    return "\0".join(("introspection", config.endpoint or "", config.issuer or "", config.client_id, signed))


class IntrospectionRoute:
    """The introspection answers of one guard: its settings, store, limits and counters.

    Args:
        config: the introspection settings.
        metadata: the issuer metadata that names the endpoint, when it is not configured.
        store: the guard's result store.
        rate: the introspection rate limits.
        metrics: the guard's counters.
        keys_flow: fetches the keys of signed answers (RFC 9701), when required.
        deadline: the upstream deadline, which bounds a wait for another process.
    """

    __slots__ = ("config", "deadline", "keys_flow", "metadata", "metrics", "rate", "scope", "store")

    def __init__(
        self,
        config: Introspection,
        metadata: MetadataSource | None,
        store: ResultStore,
        rate: RateLimiter,
        metrics: Metrics,
        keys_flow: Callable[[str | None, float], Flow[KeySet]] | None,
        deadline: float,
    ) -> None:
        self.config = config
        self.metadata = metadata
        self.store = store
        self.rate = rate
        self.metrics = metrics
        self.keys_flow = keys_flow
        self.deadline = deadline
        #: The scope under which this guard's introspection facts are keyed.
        self.scope = introspection_scope(config)

    def answer(self, token: str, cache_key: bytes, now: float, client: str | None) -> Flow[IntrospectionResult]:
        """The introspection answer about ``token``: shared by another process,
        or asked for (one process at a time). An inactive answer is kept
        briefly under ``cache_key`` and raised.

        Raises:
            InvalidToken: the answer, re-checked with this guard's settings, refuses the token.
            ServiceUnavailable: a rate limit refused the call, or the endpoint failed.
        """
        config = self.config
        store = self.store
        events = self.metrics.events
        fact_key = store.fact_key(self.scope, token)
        result = None
        leader = False
        if store.shared is not None:
            result = yield from self._from_fact(fact_key, now)
            if result is None:
                events["shared_cache_miss"] += 1
        if result is None:
            self.take_rate(client, now)
            if store.shared is not None:
                leader, result = yield from self._lead_or_wait(fact_key, now)
        if result is None:
            events["introspection"] += 1
            try:
                result = yield from introspect_flow(
                    token,
                    config,
                    self.metadata,
                    now,
                    coalesce_key="POST introspect " + fact_key,
                    keys_flow=self.keys_flow,
                )
            except ServiceUnavailable:
                if leader:
                    yield from store.release(fact_key)
                raise
            except GeneratorExit:
                # Cancelled mid-call: nothing may be yielded now. The Redis lock
                # expires by itself; this process must just stop counting it as held.
                store.forget_lock(fact_key)
                raise
            if store.shared is not None and result.answer is not None:
                yield from store.write_fact(fact_key, introspection_fact(result.answer, now), result.ttl)
            if leader:
                yield from store.release(fact_key)
        else:
            events["shared_cache_hit"] += 1
        if result.claims is None:
            if result.ttl > 0:
                store.keep(cache_key, rejection_entry(result.reason, now + result.ttl), now)
            raise InvalidToken(result.reason)
        return result

    def _from_fact(self, fact_key: str, now: float) -> Flow[IntrospectionResult | None]:
        fact = yield from self.store.read_fact(fact_key, "introspection")
        return read_introspection_fact(fact, self.config, now) if fact is not None else None

    def take_rate(self, client: str | None, now: float) -> None:
        """Apply the introspection rate limits.

        Raises:
            ServiceUnavailable: a rate limit refused the call.
        """
        if self.rate.active:
            wait = self.rate.take(client, now)
            if wait is not None:
                self.metrics.upstream("introspection", "rate_limited")
                raise ServiceUnavailable(
                    "too many introspection calls", retry_after=math.ceil(wait), reason="rate_limited"
                )

    def _lead_or_wait(self, fact_key: str, now: float) -> Flow[tuple[bool, IntrospectionResult | None]]:
        """With a shared store, elect one process to introspect ``fact_key``'s token
        (see :meth:`ResultStore.lead_or_wait`).

        Raises:
            ServiceUnavailable: the elected process is still calling (the provider is slow).
        """
        config = self.config

        def accept(fact: dict[str, Any]) -> IntrospectionResult | None:
            return read_introspection_fact(fact, config, now)

        try:
            return (yield from self.store.lead_or_wait(fact_key, "introspection", accept, self.deadline))
        except ServiceUnavailable:
            self.metrics.upstream("introspection", "lock_wait")
            raise
