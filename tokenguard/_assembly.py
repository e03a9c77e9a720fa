"""How a :class:`~tokenguard.TokenGuard` is put together from its options.

Rule: every option is checked here, before the part it configures is built,
and each :class:`~tokenguard.ConfigurationError` names the option as the
user writes it. Nothing here runs on a request and nothing performs I/O:
sources, clients and stores are built, never contacted.

:class:`Assembly` holds a guard's settings and parts; ``TokenGuard``
(``guard.py``) inherits them and adds only behaviour, so every attribute the
facade reads is built here, in this order:

* the settings the adapters read (``realm``, ``max_token_bytes``, DPoP, mTLS...);
* the two cache levels: the in-process cache and the shared store, if any;
* where keys and metadata come from (an ``IssuerRuntime`` per issuer, one
  ``MetadataSource`` per issuer URL), and the introspection settings;
* the HTTP clients and the runners' coalescers;
* the result store, keyed by the guard's policy fingerprint, and the keyed
  hash states of the inlined cache hit;
* the upstream policy (breakers, caps, one deadline) and, with a shared
  store, the sealing of what crosses processes;
* the router, the UserInfo lookup and the registry of route scopes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import httpx

from ._clients import HttpClients
from ._envelope import Envelope
from ._policy import guard_fingerprint, shared_hash_key
from ._route_scopes import RouteScopes
from ._runner import AsyncCoalescer, SyncCoalescer
from .breaker import BreakerSettings, CircuitBreakers
from .cache import CacheBackend, MemoryCache
from .errors import ConfigurationError
from .facts import verifier_identity
from .introspection import Introspection
from .introspection_route import IntrospectionRoute
from .issuer import IssuerRuntime, JWTIssuer
from .limits import ConcurrencyLimit, IntrospectionLimits, RateLimiter
from .metrics import Metrics
from .routing import CustomVerifier, Router, jwt_scope
from .sender_config import introspection_keys_flow, is_sender_constrained, sender_settings
from .shared import SealedStore, SharedPolicy, SharedStore
from .sources import FetchSettings, MetadataSource, check_url
from .store import ResultStore
from .upstream import Upstream
from .userinfo import UserinfoLookup

if TYPE_CHECKING:
    from ._effects import Flow
    from .dpop import DPoPMode, DPoPSettings
    from .forwarded import TrustedProxies
    from .keys import KeySet
    from .mtls import MTLSSettings

__all__ = ["Assembly"]

logger = logging.getLogger("tokenguard")


class Assembly:
    """A guard's settings and parts, checked and wired from its options.

    The base of :class:`~tokenguard.TokenGuard`, whose ``__init__`` passes
    every option on: the defaults and their documentation live there.

    Raises:
        ConfigurationError: nothing to verify with, ``issuers`` not a sequence
            of :class:`~tokenguard.JWTIssuer`, or an invalid option.
    """

    def __init__(
        self,
        issuers: Sequence[JWTIssuer],
        introspection: Introspection | None,
        *,
        realm: str | None,
        cache: CacheBackend | SharedStore | str | None,
        hash_key: bytes | None,
        max_token_bytes: int,
        allow_query_token: bool,
        allow_form_token: bool,
        include_error_details: bool,
        resource_metadata: str | None,
        timeout: float | httpx.Timeout,
        deadline: float,
        http_client: httpx.Client | None,
        async_http_client: httpx.AsyncClient | None,
        clock: Callable[[], float],
        verifier: CustomVerifier | None,
        verifier_cache_ttl: float,
        userinfo_cache_ttl: float,
        breaker: BreakerSettings | None,
        introspection_limits: IntrospectionLimits | None,
        proof_of_possession: bool,
        dpop: DPoPSettings | DPoPMode | None,
        mtls: MTLSSettings | bool | None,
        trusted_proxies: TrustedProxies | None,
        resource: str | None,
        resource_name: str | None,
    ) -> None:
        # ---- the settings the adapters read
        if isinstance(issuers, JWTIssuer | str) or not all(isinstance(i, JWTIssuer) for i in issuers):
            raise ConfigurationError("issuers must be a sequence of JWTIssuer (write issuers=[issuer])")
        for name, flag in (
            ("allow_query_token", allow_query_token),
            ("allow_form_token", allow_form_token),
            ("include_error_details", include_error_details),
            ("proof_of_possession", proof_of_possession),
        ):
            if not isinstance(flag, bool):
                raise ConfigurationError(f"{name} must be True or False, not {flag!r}")
        if not issuers and introspection is None and verifier is None:
            raise ConfigurationError("TokenGuard needs issuers=, introspection= or verifier=")
        if isinstance(deadline, bool) or not isinstance(deadline, int | float) or not 0 < deadline < math.inf:
            raise ConfigurationError(f"deadline must be a positive number of seconds, not {deadline!r}")
        if isinstance(max_token_bytes, bool) or not isinstance(max_token_bytes, int) or max_token_bytes < 1:
            # Else a string fails on the first request, inside parse_authorization.
            raise ConfigurationError(f"max_token_bytes must be a positive integer, not {max_token_bytes!r}")
        if hash_key is not None and not isinstance(hash_key, bytes):
            raise ConfigurationError(f"hash_key must be bytes (secret.encode()), not {type(hash_key).__name__}")
        if realm is not None and not isinstance(realm, str):
            raise ConfigurationError(f"realm must be a string or None, not {realm!r}")
        self.realm = realm
        self.max_token_bytes = max_token_bytes
        self.allow_query_token = allow_query_token
        self.allow_form_token = allow_form_token
        self.include_error_details = include_error_details
        self.resource_metadata = resource_metadata
        self.clock = clock
        self.dpop, self.mtls, self.trusted_proxies = sender_settings(dpop, mtls, trusted_proxies)
        # verify() called outside request_auth judges tokens as plain Bearer
        # (sender_config.check_direct_verify), unless the application said it
        # checks the binding itself (proof_of_possession=True).
        self._direct_check = is_sender_constrained(self) and not proof_of_possession
        # The adapters judge each request whole (request_auth.py): a bound
        # token must come with its proof there, so verify() itself admits
        # tokens carrying cnf, and request_auth refuses a bound token sent
        # as Bearer (RFC 9449 §7.2 downgrade).
        self.proof_of_possession = proof_of_possession or is_sender_constrained(self)
        self.resource = resource
        self.resource_name = resource_name
        if resource is not None and resource_metadata is None:
            from .resource_metadata import metadata_url

            self.resource_metadata = metadata_url(resource)
        self._metrics = Metrics()
        self._events = self._metrics.events
        # Plain ints on the hot path: a Counter update costs more than the lookup.
        self._hits = 0

        # ---- the two cache levels
        shared: SharedStore | None = None
        if isinstance(cache, str):
            from .redis_cache import RedisCache

            shared, cache = RedisCache(cache), None
        elif isinstance(cache, SharedStore):
            shared, cache = cache, None
        self._shared = shared
        self._cache: CacheBackend = cache if cache is not None else MemoryCache(clock=clock)

        # ---- where keys and metadata come from
        self._metadata: dict[str, MetadataSource] = {}
        self._issuers: dict[str, IssuerRuntime] = {}
        for config in issuers:
            if config.issuer in self._issuers:
                raise ConfigurationError(f"issuer {config.issuer!r} configured twice")
            needs_metadata = not (config.keys or config.jwks or config.hmac_keys or config.jwks_uri)
            metadata = self._metadata_for(config.issuer, config.fetch, config.discovery_url) if needs_metadata else None
            self._issuers[config.issuer] = IssuerRuntime(config, metadata)
        self._introspection = introspection
        #: Where RFC 9701 signed introspection answers find their keys (readiness opens its probe's answer with it).
        self._introspection_keys: Callable[[str | None, float], Flow[KeySet]] | None = None
        if introspection is not None and introspection.signed_answers:
            self._introspection_keys = introspection_keys_flow(introspection, self._issuers)
        if introspection is None and any(r.config.check_revocation for r in self._issuers.values()):
            raise ConfigurationError(
                "check_revocation=True needs introspection: client_id= or introspection=Introspection(...)"
            )
        self._introspection_metadata: MetadataSource | None = None
        if introspection is not None:
            if introspection.endpoint is not None:
                check_url(introspection.endpoint, require_https=self._require_https(), what="introspection_endpoint")
            else:
                assert introspection.issuer is not None
                fetch = (
                    self._issuers[introspection.issuer].config.fetch
                    if introspection.issuer in self._issuers
                    else FetchSettings()
                )
                self._introspection_metadata = self._metadata_for(introspection.issuer, fetch, None)

        # ---- HTTP clients and the runners' coalescers
        self._clients = HttpClients(httpx.Timeout(timeout), http_client, async_http_client)
        self._sync_client = self._clients.sync
        self._async_client = self._clients.async_
        self._sync_coalescer = SyncCoalescer()
        self._async_coalescer = AsyncCoalescer()

        # ---- the result store, keyed by this guard's policy
        secret_hash_key = hash_key is not None
        if hash_key is None and shared is not None:
            hash_key, secret_hash_key = shared_hash_key(self._issuers, introspection)
        verifier_scope = "custom\0" + verifier_identity(verifier) if verifier is not None else ""
        fingerprint = guard_fingerprint(
            self._issuers,
            {name: jwt_scope(runtime) for name, runtime in self._issuers.items()},
            introspection,
            verifier,
            verifier_scope,
            verifier_cache_ttl,
            self.proof_of_possession,
        )
        self._store = ResultStore(self._cache, shared, hash_key=hash_key, policy=fingerprint)
        self._hasher = self._store.verdicts
        self._hash_inner, self._hash_outer = self._hasher.keyed_states()
        self._cache_get = self._cache.get  # bound once: read on every request
        if shared is not None:
            policy = SharedPolicy(shared.lock_ttl, min(shared.lock_wait, deadline))
            for source in self._metadata.values():
                source.shared = policy
            for runtime in self._issuers.values():
                if runtime.jwks is not None:
                    runtime.jwks.shared = policy

        # ---- upstream policy
        limits = introspection_limits or IntrospectionLimits()
        self._breakers = CircuitBreakers(breaker or BreakerSettings())
        caps = {"introspection": ConcurrencyLimit(limits.max_concurrent, limits.max_wait)}
        self._upstream = Upstream(
            breakers=self._breakers,
            metrics=self._metrics,
            limits=caps if limits.max_concurrent > 0 else None,
            shared=self._sealed(shared, secret_hash_key) if shared is not None else None,
            clock=clock,
            deadline=deadline,
        )

        # ---- routing: which method verifies a token
        introspecting = None
        if introspection is not None:
            introspecting = IntrospectionRoute(
                introspection,
                self._introspection_metadata,
                self._store,
                RateLimiter(limits),
                self._metrics,
                self._introspection_keys,
                deadline,
            )
        #: The scope under which this guard's introspection facts are keyed.
        self._introspection_scope = introspecting.scope if introspecting is not None else ""
        self._router = Router(
            issuers=self._issuers,
            introspection=introspecting,
            verifier=verifier,
            verifier_cache_ttl=verifier_cache_ttl,
            verifier_scope=verifier_scope,
            store=self._store,
            events=self._events,
            proof_of_possession=self.proof_of_possession,
        )
        self._userinfo = UserinfoLookup(
            self._metadata, self._introspection_metadata, self._cache, self._hasher, userinfo_cache_ttl
        )
        #: Scopes routes require (``requires()``, ``declare_scopes()``), checked against ``scopes_supported``.
        self._route_scopes = RouteScopes(self._metadata)

    def _require_https(self) -> bool:
        return all(runtime.config.fetch.require_https for runtime in self._issuers.values()) if self._issuers else True

    def _metadata_for(self, issuer: str, fetch: FetchSettings, discovery_url: str | None) -> MetadataSource:
        source = self._metadata.get(issuer)
        if source is None:
            check_url(issuer, require_https=fetch.require_https, what="issuer")
            source = self._metadata[issuer] = MetadataSource(issuer, fetch, discovery_url=discovery_url)
        return source

    def _sealed(self, shared: SharedStore, secret_hash_key: bool) -> SealedStore:
        """``shared`` sealing every value it holds, with the store's encryption keys or the MAC key."""
        aead_keys = tuple(getattr(shared, "encryption_keys", ()))
        if not aead_keys and not secret_hash_key:
            logger.warning(
                "shared cache: values are authenticated with a key derived from public configuration;"
                " set hash_key (or TOKENGUARD_HASH_KEY) or an encryption_key, or whoever can write to"
                " the store can forge entries"
            )
        return SealedStore(shared, Envelope(aead_keys=aead_keys, mac_key=self._store.mac_key), self.clock)
