"""The surface of :class:`~tokenguard.TokenGuard` that the modules built on it use.

``readiness``, ``request_auth``, ``requirement``, ``route_policy``,
``sender_config`` and ``options`` take a guard, and the guard's facade
methods (``check``, ``requires``, ``error_response``...) call them: were they
to import ``guard.py`` for its type, even under ``TYPE_CHECKING``, the two
would import each other. They name this protocol instead, which
``TokenGuard`` satisfies structurally (mypy checks it where the guard passes
itself). Types only: nothing here runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import httpx

    from ._effects import Flow
    from ._runner import AsyncCoalescer, SyncCoalescer
    from .claims import TokenClaims
    from .dpop import DPoPSettings
    from .forwarded import TrustedProxies
    from .introspection import Introspection
    from .issuer import IssuerRuntime
    from .keys import KeySet
    from .mtls import MTLSSettings
    from .sources import MetadataSource
    from .upstream import Upstream

__all__ = ["GuardLike"]


class GuardLike(Protocol):
    """What code built on a guard reads from it (see the module docstring)."""

    realm: str | None
    max_token_bytes: int
    allow_query_token: bool
    allow_form_token: bool
    include_error_details: bool
    resource: str | None
    resource_name: str | None
    resource_metadata: str | None
    clock: Callable[[], float]
    dpop: DPoPSettings | None
    mtls: MTLSSettings | None
    trusted_proxies: TrustedProxies | None
    # Wiring that readiness checks and the RFC 9728 document read.
    _issuers: dict[str, IssuerRuntime]
    _introspection: Introspection | None
    _introspection_metadata: MetadataSource | None
    _introspection_keys: Callable[[str | None, float], Flow[KeySet]] | None
    _metadata: dict[str, MetadataSource]
    _upstream: Upstream
    _sync_coalescer: SyncCoalescer
    _async_coalescer: AsyncCoalescer

    def _sync_client(self) -> httpx.Client: ...

    def _async_client(self) -> httpx.AsyncClient: ...

    @property
    def route_scopes(self) -> frozenset[str]: ...

    def extract(
        self, authorization: Sequence[str] = (), query_tokens: Sequence[str] = (), form_tokens: Sequence[str] = ()
    ) -> str: ...

    def verify_sync(self, token: str, *, client: str | None = None) -> TokenClaims: ...

    async def verify(self, token: str, *, client: str | None = None) -> TokenClaims: ...
