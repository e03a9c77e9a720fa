"""``TokenGuard``: the one object every adapter calls.

Strategy:

* **Routing.** A token of JWS shape whose unverified ``iss`` names a
  configured issuer is verified locally with that issuer's keys. Any other
  token goes to introspection when it is configured (a JWT naming an issuer
  other than the introspection server's own is refused without a network
  call); otherwise it is ``invalid_token``. URLs are never taken from tokens.
* **Caching.** Verdicts live in process under a keyed hash of the token whose
  key is bound to a fingerprint of this guard's policy (``store.py``), so a
  verdict is only ever served to a guard configured alike. A hit re-checks
  the time window (``exp``/``nbf`` with leeway) and, for JWTs, that the key
  that verified it is still published; otherwise the entry is dropped.
* **Errors.** Everything below raises :class:`~tokenguard.TokenError`
  subclasses; :meth:`TokenGuard.error_response` turns one into status,
  headers and body, which adapters copy onto their framework's response.
* **Sync and async.** :meth:`verify` and :meth:`verify_sync` share one flow
  (``_verify_flow``); only the runner that performs HTTP differs.
* **Two cache levels.** With a shared store (Redis), the in-process cache
  still answers first; on a miss the flow asks the store (effects, like
  HTTP) for a *fact* (``facts.py``: an introspection answer, a verified
  signature, a custom verifier's answer) and re-applies this guard's policy
  to it. Before an introspection call it takes a short lock so one process
  calls while the others wait for its answer. Shared values are sealed with
  their key name and lifetime (``_envelope.py``).
* **Deadline.** Every upstream call has one total deadline; waiters too.
* **Protecting the provider.** Every upstream call passes a per-endpoint
  circuit breaker; introspection also a rate limit and a concurrency cap.
  Refusals are 503 with ``Retry-After``, never 401.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx

from . import diagnostics
from ._config import string_tuple
from ._envelope import Envelope
from ._http import (
    AsyncCoalescer,
    CallVerifier,
    GuardFlow,
    HttpRequest,
    SyncCoalescer,
    Upstream,
    run_async,
    run_sync,
)
from .bearer import DEFAULT_MAX_TOKEN_BYTES, extract_token
from .breaker import BreakerSettings, CircuitBreakers
from .cache import CacheBackend, CachedResult, MemoryCache, TokenHasher
from .claims import TokenClaims, check_not_sender_constrained
from .errors import ConfigurationError, InvalidToken, ServiceUnavailable, TokenError
from .facts import (
    custom_fact,
    introspection_fact,
    jwt_fact,
    read_custom_fact,
    read_introspection_fact,
    read_jwt_fact,
    verifier_identity,
)
from .introspection import ClientAuthMethod, Introspection, IntrospectionResult, introspect_flow
from .issuer import IssuerRuntime, JWTIssuer
from .jwt import UnverifiedJWS, algorithms_of, has_lone_surrogate, looks_like_jws, parse_jws, peek_issuer
from .keys import HMAC_ALGORITHMS, VerificationKey
from .limits import ConcurrencyLimit, IntrospectionLimits, RateLimiter
from .metrics import Metrics, MetricsSnapshot
from .scopes import DEFAULT_SCOPE_CLAIMS, ScopeRequirement
from .shared import SealedStore, SharedPolicy, SharedStore
from .sources import FetchSettings, MetadataSource, check_url
from .store import ResultStore, policy_fingerprint, serves
from .userinfo import interpret_userinfo

if TYPE_CHECKING:
    from .dpop import DPoPMode, DPoPSettings
    from .forwarded import TrustedProxies
    from .mtls import MTLSSettings
    from .readiness import ReadinessReport
    from .requirement import Requirement

__all__ = ["CustomVerifier", "ErrorResponse", "TokenGuard"]

#: A user-supplied verifier for tokens no standard method covers: returns the
#: token's claims, ``None`` when the token is not one it knows, or raises
#: :class:`~tokenguard.InvalidToken`. May be sync or async (async ones serve
#: only ``verify()``).
CustomVerifier = Callable[[str], "Mapping[str, Any] | None | Awaitable[Mapping[str, Any] | None]"]

logger = logging.getLogger("tokenguard")

#: Upstream timeouts: a provider that has not connected in 2 s is down for
#: practical purposes (Spring's NimbusJwtDecoder: 5 s for both; Duende: 100 s,
#: HttpClient's default, which keeps requests hanging through an outage).
DEFAULT_TIMEOUT = httpx.Timeout(5.0, connect=2.0)

#: The total time one upstream call may take (connect + headers + body), and
#: the longest a coalesced waiter waits for it. Precedents: jose and Auth0 5 s
#: for a JWKS fetch (as a per-request timeout); Envoy's remote JWKS 1 s.
DEFAULT_DEADLINE = 5.0

#: Longest a verified JWT without ``exp`` stays cached (only when ``require_exp=False``).
_NO_EXP_CACHE_SECONDS = 300.0
#: ``valid_from`` of an entry whose token has no ``nbf``.
_NEVER_BEFORE = float("-inf")


class ErrorResponse:
    """Status, headers and JSON body for a failed request; adapters render it as is."""

    __slots__ = ("body", "headers", "status_code")

    def __init__(self, status_code: int, headers: list[tuple[str, str]], body: dict[str, str]) -> None:
        self.status_code = status_code
        self.headers = headers
        self.body = body


class TokenGuard:
    """Verifies Bearer tokens and enforces scopes, for any framework.

    Build one per application and share it: it holds the key and result
    caches and the HTTP connection pools. Most users start from
    :meth:`from_issuer` or :meth:`from_keys`.

    Args:
        issuers: issuers whose JWTs are verified locally.
        introspection: how to check opaque tokens (RFC 7662), if at all.
        realm: the ``realm`` of every challenge.
        cache: the result cache: an in-process :class:`MemoryCache` by default;
            a ``redis://`` / ``rediss://`` URL or a
            :class:`~tokenguard.redis_cache.RedisCache` (any
            :class:`~tokenguard.shared.SharedStore`) adds a cache shared by
            every process, behind a small in-process one.
        hash_key: the HMAC key for cache keys. Without a shared store a random
            per-process key is used. With one, every process must use the same
            key: it is this argument, else the ``TOKENGUARD_HASH_KEY``
            environment variable, else a key derived from the configuration
            (secret only if the configuration holds a client secret).
        max_token_bytes: longer tokens are refused before any parsing.
        allow_query_token / allow_form_token: accept ``access_token`` in the
            query string or form body (RFC 6750 §2.2/2.3). Tokens in URLs leak
            through logs and Referer headers; enable only when clients cannot
            send an ``Authorization`` header.
        include_error_details: put specific reasons ("token expired") in
            ``error_description``; ``False`` sends generic text only.
        resource_metadata: URL of this API's RFC 9728 protected-resource
            metadata, advertised on 401 and 403 challenges.
        timeout: seconds for each upstream HTTP call, or an ``httpx.Timeout``
            to set connect, read, write and pool limits apart. The default
            allows 2 s to connect and 5 s for the rest.
        deadline: the most seconds one upstream call may take in total
            (connect, headers and body together), and the most a request
            waiting for another's identical call waits. httpx's timeouts bound
            each read only, so a server trickling its answer a byte at a time
            would otherwise hold every request that needs it. A missed deadline
            is a 503 with ``Retry-After`` and counts as a failure for the
            circuit breaker.
        http_client / async_http_client: bring your own httpx clients (proxies,
            custom CA); tokenguard then never closes them.
        clock: the time source (seconds since the epoch), for tests.
        verifier: a :data:`CustomVerifier` tried for tokens that no configured
            JWT issuer claims, before introspection. Its claims are cached
            (``verifier_cache_ttl``, never past ``exp``), scope-checked and
            rendered like any other; ``token_type`` is ``"custom"``.
        verifier_cache_ttl: how long a custom verifier's answer is reused.
        userinfo_cache_ttl: how long a userinfo answer is reused (never past ``exp``).
        breaker: when a failing upstream endpoint is left alone for a while
            (:class:`~tokenguard.breaker.BreakerSettings`).
        introspection_limits: concurrency cap, wait and rate limits on
            introspection calls (:class:`~tokenguard.limits.IntrospectionLimits`).
        proof_of_possession: ``False`` (default) refuses sender-constrained
            tokens, whose ``cnf`` claim (JWT or introspection answer) binds
            them to a key (``jkt``, RFC 9449 DPoP) or a client certificate
            (``x5t#S256``, RFC 8705), with 401 ``invalid_token``: presented as
            plain Bearer, such a token is most likely stolen (RFC 9449 §7.1).
            ``True`` only where the application checks the proof of
            possession itself.
        dpop: DPoP (RFC 9449): a :class:`~tokenguard.dpop.DPoPSettings`, or just
            its mode (``"allowed"``, ``"required"``). Checked by adapters through
            :func:`~tokenguard.request_auth.verify_request`.
        mtls: certificate-bound tokens (RFC 8705): a
            :class:`~tokenguard.mtls.MTLSSettings`, or ``True`` for the defaults.
        trusted_proxies: the proxies whose ``X-Forwarded-*`` and client
            certificate headers are believed (:class:`~tokenguard.forwarded.TrustedProxies`).
        resource: this API's resource identifier (RFC 8707 / RFC 9728); the
            adapters serve its protected-resource metadata, and
            ``resource_metadata`` defaults to that document's URL.
        resource_name: a human-readable name for the metadata document.

    Raises:
        ConfigurationError: nothing to verify with, ``issuers`` not a sequence
            of :class:`JWTIssuer`, or an invalid option.
    """

    def __init__(
        self,
        issuers: Sequence[JWTIssuer] = (),
        introspection: Introspection | None = None,
        *,
        realm: str | None = "api",
        cache: CacheBackend | SharedStore | str | None = None,
        hash_key: bytes | None = None,
        max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
        allow_query_token: bool = False,
        allow_form_token: bool = False,
        include_error_details: bool = True,
        resource_metadata: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        deadline: float = DEFAULT_DEADLINE,
        http_client: httpx.Client | None = None,
        async_http_client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        verifier: CustomVerifier | None = None,
        verifier_cache_ttl: float = 60.0,
        userinfo_cache_ttl: float = 60.0,
        breaker: BreakerSettings | None = None,
        introspection_limits: IntrospectionLimits | None = None,
        proof_of_possession: bool = False,
        dpop: DPoPSettings | DPoPMode | None = None,
        mtls: MTLSSettings | bool | None = None,
        trusted_proxies: TrustedProxies | None = None,
        resource: str | None = None,
        resource_name: str | None = None,
    ) -> None:
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
        self.proof_of_possession = proof_of_possession
        if not issuers and introspection is None and verifier is None:
            raise ConfigurationError("TokenGuard needs issuers=, introspection= or verifier=")
        if isinstance(deadline, bool) or not isinstance(deadline, int | float) or not 0 < deadline < math.inf:
            raise ConfigurationError(f"deadline must be a positive number of seconds, not {deadline!r}")
        self._verifier = verifier
        self._verifier_cache_ttl = verifier_cache_ttl
        self.realm = realm
        self.max_token_bytes = max_token_bytes
        self.allow_query_token = allow_query_token
        self.allow_form_token = allow_form_token
        self.include_error_details = include_error_details
        self.resource_metadata = resource_metadata
        self.clock = clock
        from .sender_config import is_sender_constrained, sender_settings

        self.dpop, self.mtls, self.trusted_proxies = sender_settings(dpop, mtls, trusted_proxies)
        if is_sender_constrained(self):
            # The adapters judge each request whole (request_auth.py): a bound
            # token must come with its proof there, so verify() itself admits
            # tokens carrying cnf, and request_auth refuses a bound token sent
            # as Bearer (RFC 9449 §7.2 downgrade).
            self.proof_of_possession = True
        self.resource = resource
        self.resource_name = resource_name
        if resource is not None and resource_metadata is None:
            from .resource_metadata import metadata_url

            self.resource_metadata = metadata_url(resource)
        self._metrics = Metrics()
        self._events = self._metrics.events
        # Plain ints on the hot path: a Counter update costs more than the lookup.
        self._hits = 0
        self._misses = 0
        shared: SharedStore | None = None
        if isinstance(cache, str):
            from .redis_cache import RedisCache

            shared, cache = RedisCache(cache), None
        elif isinstance(cache, SharedStore):
            shared, cache = cache, None
        self._shared = shared
        self._cache: CacheBackend = cache if cache is not None else MemoryCache(clock=clock)
        self._metadata: dict[str, MetadataSource] = {}
        self._issuers: dict[str, IssuerRuntime] = {}
        for config in issuers:
            if config.issuer in self._issuers:
                raise ConfigurationError(f"issuer {config.issuer!r} configured twice")
            needs_metadata = not (config.keys or config.jwks or config.hmac_keys or config.jwks_uri)
            metadata = self._metadata_for(config.issuer, config.fetch, config.discovery_url) if needs_metadata else None
            self._issuers[config.issuer] = IssuerRuntime(config, metadata)
        self._introspection = introspection
        self._introspection_keys = None
        if introspection is not None and introspection.signed_answers:
            from .sender_config import introspection_keys_flow

            self._introspection_keys = introspection_keys_flow(introspection, self._issuers)
        if introspection is None and any(r.config.check_revocation for r in self._issuers.values()):
            raise ConfigurationError(
                "check_revocation=True needs introspection: client_id= or introspection=Introspection(...)"
            )
        #: Issuers whose JWTs are verified with no upstream call and no shared
        #: store: while their keys are at hand, no flow is driven at all.
        self._at_hand = {
            name: runtime
            for name, runtime in self._issuers.items()
            if not runtime.config.check_revocation and not (shared is not None and shared.share_jwt_results)
        }
        self._userinfo_cache_ttl = userinfo_cache_ttl
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
        self._timeout = httpx.Timeout(timeout)
        self._own_client = http_client is None
        self._client = http_client
        self._client_lock = threading.Lock()
        self._given_async_client = async_http_client
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._sync_coalescer = SyncCoalescer()
        self._async_coalescer = AsyncCoalescer()
        secret_hash_key = hash_key is not None
        if hash_key is None and shared is not None:
            hash_key, secret_hash_key = self._shared_hash_key()
        #: The scopes under which shared facts are keyed: who established them.
        self._jwt_scopes = {name: _jwt_scope(runtime) for name, runtime in self._issuers.items()}
        self._introspection_scope = _introspection_scope(introspection) if introspection is not None else ""
        self._verifier_scope = "custom\0" + verifier_identity(verifier) if verifier is not None else ""
        self._store = ResultStore(self._cache, shared, hash_key=hash_key, policy=self._policy_fingerprint())
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
        limits = introspection_limits or IntrospectionLimits()
        self._rate = RateLimiter(limits)
        self._breakers = CircuitBreakers(breaker or BreakerSettings())
        caps = {"introspection": ConcurrencyLimit(limits.max_concurrent, limits.max_wait)}
        sealed = None
        if shared is not None:
            aead_keys = tuple(getattr(shared, "encryption_keys", ()))
            if not aead_keys and not secret_hash_key:
                logger.warning(
                    "shared cache: values are authenticated with a key derived from public configuration;"
                    " set hash_key (or TOKENGUARD_HASH_KEY) or an encryption_key, or whoever can write to"
                    " the store can forge entries"
                )
            sealed = SealedStore(shared, Envelope(aead_keys=aead_keys, mac_key=self._store.mac_key), clock)
        self._upstream = Upstream(
            breakers=self._breakers,
            metrics=self._metrics,
            limits=caps if limits.max_concurrent > 0 else None,
            shared=sealed,
            clock=clock,
            deadline=deadline,
        )
        #: Scopes routes require (``requires()``, ``declare_scopes()``), checked against ``scopes_supported``.
        self._route_scopes: set[str] = set()
        for source in self._metadata.values():
            source.on_first_load = partial(self._check_route_scopes, source.issuer)

    def _shared_hash_key(self) -> tuple[bytes, bool]:
        # Processes sharing a store must agree on the HMAC key. An explicit key
        # is best; failing that, one derived from what every worker of this
        # API is configured with, and secret when a client secret is among it.
        # Returns the key and whether it is secret.
        configured = os.environ.get("TOKENGUARD_HASH_KEY")
        if configured:
            return configured.encode(), True
        parts = ["tokenguard shared cache key v1", *sorted(self._issuers)]
        secret = False
        if self._introspection is not None:
            config = self._introspection
            parts += [config.endpoint or "", config.issuer or "", config.client_id, config.client_secret]
            secret = bool(config.client_secret)
        if not secret:
            logger.info("shared cache: no hash_key or client secret configured; cache keys are not secret")
        return hashlib.sha256("\0".join(parts).encode()).digest(), secret

    def _policy_fingerprint(self) -> bytes:
        # Everything that can change a verdict: each issuer's policy (issuer,
        # audiences, algorithms, types, required claims, leeway, ages, scope
        # claims), its key source and revocation checking; the introspection
        # settings (endpoint, client, audiences, leeway, lifetimes...); the
        # custom verifier (by identity: two verifiers never share verdicts).
        parts: list[object] = []
        for name in sorted(self._issuers):
            runtime = self._issuers[name]
            parts += [_canonical(runtime.policy), self._jwt_scopes[name], runtime.config.check_revocation]
        parts.append(_canonical(self._introspection))
        if self._verifier is not None:
            parts += [self._verifier_scope, id(self._verifier), self._verifier_cache_ttl]
        # Whether sender-constrained tokens are admitted as Bearer changes the verdict too.
        parts.append(("proof_of_possession", self.proof_of_possession))
        return policy_fingerprint(parts)

    def _require_https(self) -> bool:
        return all(runtime.config.fetch.require_https for runtime in self._issuers.values()) if self._issuers else True

    def _metadata_for(self, issuer: str, fetch: FetchSettings, discovery_url: str | None) -> MetadataSource:
        source = self._metadata.get(issuer)
        if source is None:
            check_url(issuer, require_https=fetch.require_https, what="issuer")
            source = self._metadata[issuer] = MetadataSource(issuer, fetch, discovery_url=discovery_url)
        return source

    # ------------------------------------------------------------------ builders

    @classmethod
    def from_issuer(
        cls,
        issuer: str,
        *,
        audience: str | Sequence[str] | None,
        client_id: str | None = None,
        client_secret: str | None = None,
        auth_method: ClientAuthMethod = "client_secret_basic",
        introspection_endpoint: str | None = None,
        jwks_uri: str | None = None,
        discovery_url: str | None = None,
        algorithms: Iterable[str] | None = None,
        token_types: Sequence[str | None] = (),
        required_claims: Sequence[str] = (),
        scope_claims: Sequence[str] | None = None,
        leeway: float | None = None,
        introspection_cache_ttl: float = 60.0,
        check_revocation: bool = False,
        fetch: FetchSettings | None = None,
        signed_introspection: bool = False,
        **options: Any,
    ) -> TokenGuard:
        """A guard for one OpenID Connect / RFC 8414 issuer, found by discovery.

        JWT access tokens are verified with the issuer's published keys. When
        ``client_id`` (and usually ``client_secret``) are given, opaque tokens
        are introspected at the metadata's ``introspection_endpoint`` (or
        ``introspection_endpoint`` when given). Nothing is fetched until the
        first token arrives. ``signed_introspection`` asks for RFC 9701 signed
        introspection answers and refuses any other.

        Other keyword arguments are passed to :class:`TokenGuard`.
        """
        fetch = fetch or FetchSettings()
        issuer_options: dict[str, Any] = {}
        if leeway is not None:
            issuer_options["leeway"] = leeway
        if scope_claims is not None:
            scope_claims = issuer_options["scope_claims"] = string_tuple(scope_claims, "scope_claims")
        jwt_issuer = JWTIssuer(
            issuer=issuer,
            audience=audience,
            jwks_uri=jwks_uri,
            discovery_url=discovery_url,
            algorithms=algorithms,
            token_types=token_types,
            required_claims=required_claims,
            fetch=fetch,
            check_revocation=check_revocation,
            **issuer_options,
        )
        introspection = None
        if client_id is not None:
            introspection = Introspection(
                endpoint=introspection_endpoint,
                client_id=client_id,
                client_secret=client_secret or "",
                auth_method=auth_method,
                issuer=issuer,
                audience=audience,
                cache_ttl=introspection_cache_ttl,
                scope_claims=tuple(scope_claims) if scope_claims is not None else DEFAULT_SCOPE_CLAIMS,
                signed_answers=signed_introspection,
            )
        return cls([jwt_issuer], introspection, **options)

    @classmethod
    def from_keys(
        cls,
        *,
        issuer: str,
        audience: str | Sequence[str] | None,
        jwks: Mapping[str, Any] | None = None,
        keys: Sequence[Any] = (),
        hmac_keys: Mapping[str | None, str | bytes] | None = None,
        algorithms: Iterable[str] | None = None,
        allow_short_hmac_secret: bool = False,
        **options: Any,
    ) -> TokenGuard:
        """A guard with static keys: no network at all.

        ``keys`` takes PEM/DER public keys, ``cryptography`` keys or JWK dicts;
        ``jwks`` a JWK Set; ``hmac_keys`` shared secrets by ``kid`` for
        issuers that sign with HS256 (e.g. the DIAN identity service).
        Issuer options (``leeway``, ``token_types``…) and guard options are
        both accepted as keywords. ``allow_short_hmac_secret=True`` accepts
        ``hmac_keys`` shorter than RFC 7518 §3.2 requires, with a WARNING:
        only for a secret a provider issued that you cannot change.
        """
        if allow_short_hmac_secret and hmac_keys:
            # Build the HMAC keys here with the opt-in; the issuer config then sees plain keys.
            hmac_algs = sorted(set(algorithms or HMAC_ALGORITHMS) & HMAC_ALGORITHMS) or ["HS256"]
            keys = [
                *keys,
                *(
                    VerificationKey.from_secret(secret, kid=kid, algorithms=hmac_algs, allow_short=True)
                    for kid, secret in hmac_keys.items()
                ),
            ]
            algorithms = sorted(algorithms_of(algorithms) | set(hmac_algs)) if algorithms is None else list(algorithms)
            hmac_keys = None
        issuer_fields = set(JWTIssuer.__dataclass_fields__)
        issuer_options = {k: options.pop(k) for k in list(options) if k in issuer_fields}
        config = JWTIssuer(
            issuer=issuer,
            audience=audience,
            jwks=jwks,
            keys=keys,
            hmac_keys=hmac_keys,
            algorithms=algorithms,
            **issuer_options,
        )
        if config.static_keys(config.policy().algorithms) is None:
            raise ConfigurationError("from_keys needs jwks=, keys= or hmac_keys=")
        return cls([config], **options)

    # ------------------------------------------------------------------ verification

    def _miss(self, token: str, now: float, key: bytes | None, entry: CachedResult | None) -> bytes:
        """After the inlined hit in verify()/verify_sync() failed: the cache key to verify afresh under.

        ``key`` is the cache key and ``entry`` what the cache held for it,
        both ``None`` when the token is oversized. A cached rejection is
        raised; a stale entry (expired, out of its window, or its key
        withdrawn) is dropped.

        Raises:
            InvalidToken: the token is oversized, or its rejection is cached.
        """
        if key is None:
            raise InvalidToken("token exceeds the maximum size")
        if entry is not None:
            if entry.claims is None:
                if now < entry.cache_until:
                    raise InvalidToken(entry.reason or "invalid token")
                self._cache.delete(key)
            elif not serves(entry, now):
                self._cache.delete(key)
        self._misses += 1
        return key

    @property
    def stats(self) -> dict[str, int]:
        """Counters: ``cache_hit``, ``cache_miss``, ``jwt_verified_locally``, ``introspection``,
        ``shared_cache_hit`` / ``_miss``, ``upstream_calls``, ``upstream_failures``...

        Approximate under heavy concurrency (hot-path increments are not locked).
        """
        snapshot = self.metrics()
        upstream = snapshot.upstream_calls
        failures = sum(n for (_, outcome), n in upstream.items() if outcome != "ok")
        return {
            "cache_hit": self._hits,
            "cache_miss": self._misses,
            **snapshot.events,
            "upstream_calls": snapshot.upstream_total(),
            "upstream_failures": failures,
        }

    def metrics(self) -> MetricsSnapshot:
        """Every counter, upstream latency histogram and breaker state, copied at once."""
        return self._metrics.snapshot(self._hits, self._misses, self._breakers.states())

    def _rejected(self, token: str, error: TokenError) -> None:
        reason = error.description or error.error_code or "no credentials"
        self._metrics.rejection(error.status_code, reason)
        level = logging.INFO if isinstance(error, ServiceUnavailable) else logging.DEBUG
        if logger.isEnabledFor(level):
            # A fingerprint, never the token: enough to correlate log lines.
            fingerprint = TokenHasher.fingerprint(self._hasher.cache_key(token[: self.max_token_bytes + 1]))
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

    def verify_sync(self, token: str, *, client: str | None = None) -> TokenClaims:
        """Verify ``token`` and return its claims (blocking; for WSGI and scripts).

        Args:
            token: the Bearer token as presented.
            client: who presented it (the adapters pass the peer address), for
                the per-client introspection rate limit; ``None`` skips that limit.

        Raises:
            InvalidToken: the token is not acceptable; answer 401.
            ServiceUnavailable: an upstream failed or is being spared; answer
                503 and let the client retry after ``retry_after`` seconds.
        """
        now = self.clock()
        # The hot path, inlined (a call costs ~10 % of a hit) and kept identical
        # in verify(): keyed hash, dict read, time window, key still trusted.
        # It is store.serves() spelled out. Anything else (misses, cached rejections,
        # stale entries) goes to _miss.
        key = entry = None
        if len(token) <= self.max_token_bytes:
            inner = self._hash_inner.copy()
            inner.update(token.encode("utf-8", "surrogateescape"))
            outer = self._hash_outer.copy()
            outer.update(inner.digest())
            key = outer.digest()
            entry = self._cache_get(key)
            if entry is not None and now < entry.cache_until and entry.valid_from <= now < entry.valid_until:
                hit = entry.claims
                owner = entry.key_owner
                if hit is not None and (
                    entry.key_thumbprint is None
                    if owner is None
                    else entry.key_thumbprint in owner.current_thumbprints or not owner.current_thumbprints
                ):
                    self._hits += 1
                    return hit
        try:
            claims, flow = self._verify_or_flow(token, now, self._miss(token, now, key, entry), client)
            if claims is not None:
                return claims
            assert flow is not None
            return run_sync(flow, self._sync_client, self._sync_coalescer, self._upstream)
        except TokenError as exc:
            self._rejected(token, exc)
            raise

    async def verify(self, token: str, *, client: str | None = None) -> TokenClaims:
        """Verify ``token`` and return its claims.

        A token seen before is answered from the cache without awaiting
        anything upstream. ``client`` as for :meth:`verify_sync`.

        Raises:
            InvalidToken: the token is not acceptable; answer 401.
            ServiceUnavailable: an upstream failed or is being spared; answer
                503 and let the client retry after ``retry_after`` seconds.
        """
        now = self.clock()
        # The hot path, as in verify_sync().
        key = entry = None
        if len(token) <= self.max_token_bytes:
            inner = self._hash_inner.copy()
            inner.update(token.encode("utf-8", "surrogateescape"))
            outer = self._hash_outer.copy()
            outer.update(inner.digest())
            key = outer.digest()
            entry = self._cache_get(key)
            if entry is not None and now < entry.cache_until and entry.valid_from <= now < entry.valid_until:
                hit = entry.claims
                owner = entry.key_owner
                if hit is not None and (
                    entry.key_thumbprint is None
                    if owner is None
                    else entry.key_thumbprint in owner.current_thumbprints or not owner.current_thumbprints
                ):
                    self._hits += 1
                    return hit
        try:
            claims, flow = self._verify_or_flow(token, now, self._miss(token, now, key, entry), client)
            if claims is not None:
                return claims
            assert flow is not None
            return await run_async(flow, self._async_client, self._async_coalescer, self._upstream)
        except TokenError as exc:
            self._rejected(token, exc)
            raise

    def _verify_or_flow(
        self, token: str, now: float, key: bytes, client: str | None
    ) -> tuple[TokenClaims, None] | tuple[None, GuardFlow[TokenClaims]]:
        """A miss: ``(claims, None)`` when the token could be verified on the
        spot, else ``(None, the flow that verifies it)``."""
        jws = self._jws_of(token)
        if jws is not None:
            claims = self._verify_at_hand(jws, key, now)
            if claims is not None:
                return claims, None
        return None, self._verify_flow(token, jws, key, now, client)

    def _jws_of(self, token: str) -> UnverifiedJWS | None:
        """``token`` parsed as a JWS, or ``None`` when it is not one (an opaque token).

        Raises:
            InvalidToken: it is malformed and nothing but local verification could accept it.
        """
        if not looks_like_jws(token):
            return None
        try:
            return parse_jws(token)
        except InvalidToken:
            # Opaque tokens may contain dots; let the custom verifier or
            # introspection judge it.
            if self._introspection is None and self._verifier is None:
                raise
            return None

    def _verify_at_hand(self, jws: UnverifiedJWS, key: bytes, now: float) -> TokenClaims | None:
        """The common case, with no flow to drive: a JWT of an issuer verified
        with no upstream call, whose keys are at hand. ``None``: anything else,
        for :meth:`_verify_flow`.
        """
        iss = peek_issuer(jws)
        runtime = self._at_hand.get(iss) if iss is not None else None
        if runtime is None:
            return None
        keys = runtime.keys_at_hand(jws, now)
        if keys is None:
            return None
        self._events["jwt_verified_locally"] += 1
        claims, thumbprint = runtime.verify_now(jws, keys, now)
        self._admit(claims)
        self._store.keep(key, self._jwt_entry(claims, runtime, thumbprint, now, None), now)
        return claims

    def _admit(self, claims: TokenClaims, *, check_text: bool = False) -> None:
        """The checks every kind of verified claims passes (JWT, introspection, custom verifier).

        ``check_text``: also refuse lone surrogates (RFC 7493 §2.1), for
        claims that did not come through the strict JWT parser.

        Raises:
            InvalidToken: a sender-constrained token presented as Bearer, or
                a claim that is not Unicode text.
        """
        if not self.proof_of_possession and "cnf" in claims:
            check_not_sender_constrained(claims.get("cnf"))
        if check_text and has_lone_surrogate(claims.to_dict()):
            raise InvalidToken("malformed claims")

    def _verify_flow(
        self, token: str, jws: UnverifiedJWS | None, key: bytes, now: float, client: str | None
    ) -> GuardFlow[TokenClaims]:
        runtime = None
        if jws is not None:
            iss = peek_issuer(jws)
            runtime = self._issuers.get(iss) if iss is not None else None
        store = self._store
        if runtime is not None:
            assert jws is not None
            # A revocation-checking guard verifies the signature itself (cheap)
            # and shares only the introspection answer: a signature fact from
            # a guard that does not check revocation must not spare the check.
            fact_key = None
            if store.shared is not None and store.shared.share_jwt_results and not runtime.config.check_revocation:
                fact_key = store.fact_key(self._jwt_scopes[runtime.config.issuer], token)
                found = yield from self._jwt_from_fact(fact_key, runtime, key, now)
                if found is not None:
                    return found
            self._events["jwt_verified_locally"] += 1
            claims, thumbprint = yield from runtime.verify_flow(jws, now)
            self._admit(claims)
            cache_until = None
            if runtime.config.check_revocation and self._introspection is not None:
                result = yield from self._introspect(token, key, now, client)
                cache_until = now + result.ttl
            entry = self._jwt_entry(claims, runtime, thumbprint, now, cache_until)
            store.keep(key, entry, now)
            if fact_key is not None:
                yield from store.write_fact(fact_key, jwt_fact(jws.header, claims, thumbprint), entry.cache_until - now)
            return claims
        if self._verifier is not None:
            fact_key = store.fact_key(self._verifier_scope, token) if store.shared is not None else None
            if fact_key is not None:
                fact = yield from store.read_fact(fact_key, "custom")
                shared_answer = read_custom_fact(fact) if fact is not None else None
                if shared_answer is not None:
                    self._events["shared_cache_hit"] += 1
                    return self._keep_custom(key, shared_answer, now)[0]
                self._events["shared_cache_miss"] += 1
            answer = yield CallVerifier(self._verifier, token)
            if answer is not None:
                claims, until = self._keep_custom(key, answer, now)
                if fact_key is not None:
                    assert isinstance(answer, Mapping)
                    yield from store.write_fact(fact_key, custom_fact(answer), until - now)
                return claims
        if jws is not None and not self._may_introspect(peek_issuer(jws)):
            diagnostics.issuer_unknown(jws.payload.get("iss"), self._trusted_issuers())
            raise InvalidToken("untrusted issuer")
        if self._introspection is None:
            raise InvalidToken("token format not accepted")
        result = yield from self._introspect(token, key, now, client)
        opaque_claims = result.claims
        assert opaque_claims is not None
        self._admit(opaque_claims, check_text=True)
        leeway = self._introspection.leeway
        entry = CachedResult(
            opaque_claims,
            now + result.ttl,
            valid_from=opaque_claims.nbf - leeway if opaque_claims.nbf is not None else _NEVER_BEFORE,
            valid_until=opaque_claims.exp + leeway if opaque_claims.exp is not None else float("inf"),
        )
        store.keep(key, entry, now)
        return opaque_claims

    def _trusted_issuers(self) -> list[str]:
        # For diagnostics: every issuer whose tokens this guard would accept.
        extra = self._introspection.issuer if self._introspection is not None else None
        return [*self._issuers, *([extra] if extra and extra not in self._issuers else [])]

    def _jwt_from_fact(
        self, fact_key: str, runtime: IssuerRuntime, key: bytes, now: float
    ) -> GuardFlow[TokenClaims | None]:
        """Claims from another process's signature fact, re-checked with this guard's policy.

        ``None`` when there is no usable fact (the caller verifies afresh).

        Raises:
            InvalidToken: this guard's policy refuses the token.
        """
        fact = yield from self._store.read_fact(fact_key, "jwt")
        if fact is None:
            self._events["shared_cache_miss"] += 1
            return None
        claims, thumbprint = read_jwt_fact(fact, runtime.policy, now)
        self._admit(claims)
        entry = self._jwt_entry(claims, runtime, thumbprint, now, None)
        # Judged against the keys this process trusts: a result signed by a
        # key since withdrawn here is verified afresh.
        if not serves(entry, now):
            self._events["shared_cache_miss"] += 1
            return None
        self._events["shared_cache_hit"] += 1
        self._store.keep(key, entry, now)
        return claims

    def _introspect(self, token: str, key: bytes, now: float, client: str | None) -> GuardFlow[IntrospectionResult]:
        """The introspection answer about ``token``: shared by another process,
        or asked for (one process at a time). An inactive answer is cached
        briefly and raised.

        Raises:
            InvalidToken: the answer, re-checked with this guard's settings, refuses the token.
            ServiceUnavailable: a rate limit refused the call, or the endpoint failed.
        """
        config = self._introspection
        assert config is not None
        store = self._store
        fact_key = store.fact_key(self._introspection_scope, token)
        result = None
        leader = False
        if store.shared is not None:
            result = yield from self._introspection_from_fact(fact_key, now)
            if result is None:
                self._events["shared_cache_miss"] += 1
        if result is None:
            self._take_rate(client, now)
            if store.shared is not None:
                leader, result = yield from self._lead_or_wait(fact_key, now)
        if result is None:
            self._events["introspection"] += 1
            try:
                result = yield from introspect_flow(
                    token,
                    config,
                    self._introspection_metadata,
                    now,
                    coalesce_key="POST introspect " + fact_key,
                    keys_flow=self._introspection_keys,
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
            self._events["shared_cache_hit"] += 1
        if result.claims is None:
            if result.ttl > 0:
                store.keep(key, CachedResult(None, now + result.ttl, reason=result.reason), now)
            raise InvalidToken(result.reason)
        return result

    def _introspection_from_fact(self, fact_key: str, now: float) -> GuardFlow[IntrospectionResult | None]:
        config = self._introspection
        assert config is not None
        fact = yield from self._store.read_fact(fact_key, "introspection")
        return read_introspection_fact(fact, config, now) if fact is not None else None

    def _take_rate(self, client: str | None, now: float) -> None:
        """Apply the introspection rate limits.

        Raises:
            ServiceUnavailable: a rate limit refused the call.
        """
        if self._rate.active:
            wait = self._rate.take(client, now)
            if wait is not None:
                self._metrics.upstream("introspection", "rate_limited")
                raise ServiceUnavailable(
                    "too many introspection calls", retry_after=math.ceil(wait), reason="rate_limited"
                )

    def _lead_or_wait(self, fact_key: str, now: float) -> GuardFlow[tuple[bool, IntrospectionResult | None]]:
        """With a shared store, elect one process to introspect ``fact_key``'s token
        (see :meth:`ResultStore.lead_or_wait`).

        Raises:
            ServiceUnavailable: the elected process is still calling (the provider is slow).
        """
        config = self._introspection
        assert config is not None

        def accept(fact: dict[str, Any]) -> IntrospectionResult | None:
            return read_introspection_fact(fact, config, now)

        try:
            return (yield from self._store.lead_or_wait(fact_key, "introspection", accept, self._upstream.deadline))
        except ServiceUnavailable:
            self._metrics.upstream("introspection", "lock_wait")
            raise

    def _keep_custom(self, key: bytes, answer: object, now: float) -> tuple[TokenClaims, float]:
        """Claims from a custom verifier's answer (fresh or shared), kept in process; and until when."""
        if not isinstance(answer, Mapping):
            raise TypeError("a custom verifier must return a mapping of claims or None")
        claims = TokenClaims(answer, token_type="custom")
        self._admit(claims, check_text=True)
        if claims.exp is not None and now >= claims.exp:
            raise InvalidToken("token expired")
        cache_until = now + self._verifier_cache_ttl
        if claims.exp is not None:
            cache_until = min(cache_until, claims.exp)
        self._store.keep(key, CachedResult(claims, cache_until, valid_until=claims.exp or float("inf")), now)
        return claims, cache_until

    def _may_introspect(self, iss: str | None) -> bool:
        config = self._introspection
        if config is None:
            return False
        return config.issuer is None or iss is None or iss == config.issuer

    @staticmethod
    def _jwt_entry(
        claims: TokenClaims, runtime: IssuerRuntime, thumbprint: str, now: float, cache_until: float | None
    ) -> CachedResult:
        """The cache entry of a verified JWT: valid until ``exp`` (and ``max_token_age``) plus leeway."""
        policy = runtime.policy
        leeway = policy.leeway
        exp = claims.exp
        valid_until = exp + leeway if exp is not None else now + _NO_EXP_CACHE_SECONDS
        if policy.max_token_age is not None and claims.iat is not None:
            valid_until = min(valid_until, claims.iat + policy.max_token_age + leeway)
        nbf = claims.nbf
        return CachedResult(
            claims,
            valid_until if cache_until is None else min(valid_until, cache_until),
            nbf - leeway if nbf is not None else _NEVER_BEFORE,
            valid_until,
            "",
            policy.issuer,
            thumbprint,
            runtime.key_owner,
        )

    # ------------------------------------------------------------------ userinfo

    def userinfo_sync(self, token: str) -> TokenClaims:
        """Verify ``token``, then fetch the OIDC UserInfo of its subject (blocking).

        The endpoint is the ``userinfo_endpoint`` of the configured issuer
        that the token belongs to; answers are cached under a keyed hash of
        the token for ``userinfo_cache_ttl`` (never past ``exp``).

        Raises:
            InvalidToken: the token is invalid, or the endpoint refused it.
            ServiceUnavailable: the endpoint failed.
            ConfigurationError: no metadata (hence no endpoint) for this token's issuer.
        """
        claims = self.verify_sync(token)
        now = self.clock()
        key, cached = self._userinfo_lookup(token, now)
        if cached is not None:
            return cached
        return run_sync(
            self._userinfo_flow(token, claims, key, now), self._sync_client, self._sync_coalescer, self._upstream
        )

    async def userinfo(self, token: str) -> TokenClaims:
        """Async twin of :meth:`userinfo_sync`."""
        claims = await self.verify(token)
        now = self.clock()
        key, cached = self._userinfo_lookup(token, now)
        if cached is not None:
            return cached
        return await run_async(
            self._userinfo_flow(token, claims, key, now), self._async_client, self._async_coalescer, self._upstream
        )

    def _userinfo_lookup(self, token: str, now: float) -> tuple[bytes, TokenClaims | None]:
        # Its own key space: the same token maps to a different cache key here.
        key = self._hasher.cache_key("\x00userinfo\x00" + token)
        entry = self._cache.get(key)
        if entry is not None and now < entry.cache_until and entry.claims is not None:
            return key, entry.claims
        return key, None

    def _userinfo_flow(self, token: str, claims: TokenClaims, key: bytes, now: float) -> GuardFlow[TokenClaims]:
        metadata = self._metadata.get(claims.issuer or "")
        if metadata is None and claims.token_type == "opaque":
            metadata = self._introspection_metadata
        if metadata is None:
            raise ConfigurationError("no issuer metadata for this token: userinfo is unavailable")
        endpoint = yield from metadata.endpoint_flow("userinfo_endpoint", now)
        if endpoint is None:
            raise ConfigurationError("the issuer's metadata has no userinfo_endpoint")
        reply = yield HttpRequest(
            "GET",
            endpoint,
            headers=(("Authorization", f"Bearer {token}"),),
            coalesce_key="GET userinfo " + key.hex(),
            purpose="userinfo",
        )
        info = interpret_userinfo(reply, claims)
        cache_until = now + self._userinfo_cache_ttl
        if claims.exp is not None:
            cache_until = min(cache_until, claims.exp)
        self._cache.set(key, CachedResult(info, cache_until))
        return info

    # ------------------------------------------------------------------ requests and scopes

    def extract(
        self,
        authorization: Sequence[str] = (),
        query_tokens: Sequence[str] = (),
        form_tokens: Sequence[str] = (),
    ) -> str:
        """Find the request's single Bearer token with this guard's settings.

        Raises:
            MissingToken: no credentials; InvalidRequest: malformed or several.
        """
        return extract_token(
            authorization,
            query_tokens,
            form_tokens,
            allow_query=self.allow_query_token,
            allow_form=self.allow_form_token,
            max_token_bytes=self.max_token_bytes,
        )

    @staticmethod
    def require(claims: TokenClaims, *scopes: str, any_of: bool = False) -> TokenClaims:
        """Check that ``claims`` grant ``scopes`` (all of them, or any one).

        Returns the claims, so it chains: ``claims = guard.require(claims, "read")``.

        Raises:
            InsufficientScope: answer 403; the error lists the needed scopes.
        """
        ScopeRequirement(tuple(scopes), any_of).check(claims.scopes)
        return claims

    def requires(
        self,
        *scopes: str,
        any_of: bool = False,
        acr_values: Sequence[str] = (),
        max_age: int | None = None,
        dpop: DPoPMode | None = None,
    ) -> Requirement:
        """A route requirement: a FastAPI dependency returning the claims.

        Use as ``Security(guard.requires("books:read"))`` or ``Depends(...)``;
        the adapters' decorators take the same arguments.

        Args:
            scopes: scopes the token must grant (all, or one with ``any_of``).
            acr_values: step-up (RFC 9470): acceptable ``acr`` values.
            max_age: step-up: largest age of the user's authentication, seconds.
            dpop: this route's DPoP mode, stricter or laxer than the guard's
                (``"required"``: a DPoP-bound token with a proof; ``"disabled"``:
                Bearer only). Needs DPoP enabled on the guard unless ``"disabled"``.

        Raises:
            ConfigurationError: invalid step-up values or DPoP mode.
        """
        from .requirement import Requirement
        from .route_policy import RoutePolicy

        needed = ScopeRequirement(tuple(scopes), any_of)  # validates first: a list among scopes is unhashable below
        self.declare_scopes(*scopes)
        policy = RoutePolicy.of(self, acr_values=acr_values, max_age=max_age, dpop=dpop)
        return Requirement(self, needed, policy)

    def declare_scopes(self, *scopes: str) -> None:
        """Tell the guard which scopes routes require, so a typo is caught early.

        :meth:`requires` declares its scopes itself; adapters and custom
        integrations call this for theirs. A scope absent from an issuer's
        ``scopes_supported`` can never be granted, so its route would answer
        403 to everyone: the guard logs one WARNING per such scope when the
        issuer's metadata is first loaded (or now, if it already is).
        """
        new = set(scopes) - self._route_scopes
        if not new:
            return
        self._route_scopes.update(new)
        for source in self._metadata.values():
            if source.state.value is not None:
                diagnostics.check_route_scopes(source.issuer, new, source.state.value)

    @property
    def route_scopes(self) -> frozenset[str]:
        """Every scope the routes declared (:meth:`declare_scopes`), for the RFC 9728 document."""
        return frozenset(self._route_scopes)

    def _check_route_scopes(self, issuer: str, document: dict[str, Any]) -> None:
        diagnostics.check_route_scopes(issuer, self._route_scopes, document)

    # ------------------------------------------------------------------ readiness

    async def check(self) -> ReadinessReport:
        """Fetch every issuer's metadata and keys and test the introspection credentials.

        For start-up and readiness probes: see :func:`tokenguard.readiness.check`.
        """
        from .readiness import check

        return await check(self)

    def check_sync(self) -> ReadinessReport:
        """Blocking twin of :meth:`check` (see :func:`tokenguard.readiness.check_sync`)."""
        from .readiness import check_sync

        return check_sync(self)

    def protected_resource_metadata(self) -> dict[str, Any]:
        """This API's RFC 9728 protected-resource metadata document.

        Raises:
            ConfigurationError: the guard has no ``resource``.
        """
        from .sender_config import metadata_document

        return metadata_document(self)

    def error_response(self, error: TokenError) -> ErrorResponse:
        """Status, headers and body to send for ``error``."""
        extra: tuple[tuple[str, str], ...] = ()
        self._events[f"rejected_{error.status_code}"] += 1
        if self.resource_metadata and error.status_code in (401, 403):
            extra = (("resource_metadata", self.resource_metadata),)
        if self.dpop is not None and self.dpop.enabled:
            from .request_auth import challenge_headers

            headers = challenge_headers(
                error, self.dpop, self.realm, include_description=self.include_error_details, extra=extra
            )
        else:
            headers = error.headers(self.realm, include_description=self.include_error_details, extra=extra)
        return ErrorResponse(error.status_code, headers, error.body(include_description=self.include_error_details))

    # ------------------------------------------------------------------ HTTP clients

    def _sync_client(self) -> httpx.Client:
        client = self._client
        if client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = httpx.Client(timeout=self._timeout, follow_redirects=False)
                client = self._client
        return client

    def _async_client(self) -> httpx.AsyncClient:
        if self._given_async_client is not None:
            return self._given_async_client
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            # One pool per event loop: connections cannot cross loops.
            client = self._async_clients[loop] = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        return client

    def close(self) -> None:
        """Close the HTTP clients tokenguard created (sync side), and the shared store's."""
        if self._own_client and self._client is not None:
            self._client.close()
            self._client = None
        close_store = getattr(self._shared, "close", None)
        if close_store is not None:
            close_store()

    async def aclose(self) -> None:
        """Close the HTTP clients tokenguard created, including this loop's async one."""
        self.close()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - always called from a loop
            return
        client = self._async_clients.pop(loop, None)
        if client is not None:
            await client.aclose()
        aclose_store = getattr(self._shared, "aclose", None)
        if aclose_store is not None:
            await aclose_store()

    def __enter__(self) -> TokenGuard:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> TokenGuard:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        names = ", ".join(sorted(self._issuers)) or "-"
        return f"TokenGuard(issuers=[{names}], introspection={self._introspection is not None})"


def _jwt_scope(runtime: IssuerRuntime) -> str:
    """Who establishes a JWT signature fact: the issuer and where its keys come from."""
    config = runtime.config
    static = ",".join(sorted(runtime.current_thumbprints))
    return "\0".join(("jwt", config.issuer, config.jwks_uri or "", config.discovery_url or "", static))


def _introspection_scope(config: Introspection) -> str:
    """Who establishes an introspection fact: the endpoint (or its issuer) and the
    client asking, since an authorization server may answer each client differently."""
    return "\0".join(("introspection", config.endpoint or "", config.issuer or "", config.client_id))


def _canonical(value: object) -> object:
    """``value`` as nested tuples with sets sorted: a stable input for the policy fingerprint."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (
            type(value).__qualname__,
            tuple(
                (f.name, _canonical(getattr(value, f.name)))
                for f in dataclasses.fields(value)
                if f.name != "client_secret"
            ),
        )
    if isinstance(value, frozenset | set):
        return tuple(sorted(repr(_canonical(v)) for v in value))
    if isinstance(value, Mapping):
        return tuple(sorted((repr(k), repr(_canonical(v))) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_canonical(v) for v in value)
    return value
