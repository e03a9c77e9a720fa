"""``TokenGuard``: the one object every adapter calls.

Strategy:

* **Routing.** A token of JWS shape whose unverified ``iss`` names a
  configured issuer is verified locally with that issuer's keys. Any other
  token goes to introspection when it is configured (a JWT naming an issuer
  other than the introspection server's own is refused without a network
  call); otherwise it is ``invalid_token``. URLs are never taken from tokens.
* **Caching.** Results live under a keyed hash of the token. A hit re-checks
  the time window (``exp``/``nbf`` with leeway) and, for JWTs, that the key
  that verified it is still published; otherwise the entry is dropped.
* **Errors.** Everything below raises :class:`~tokenguard.TokenError`
  subclasses; :meth:`TokenGuard.error_response` turns one into status,
  headers and body, which adapters copy onto their framework's response.
* **Sync and async.** :meth:`verify` and :meth:`verify_sync` share one flow
  (``_verify_flow``); only the runner that performs HTTP differs.
* **Two cache levels.** With a shared store (Redis), the in-process cache
  still answers first; on a miss the flow asks the store (effects, like
  HTTP), and before an introspection call it takes a short lock so one
  process calls while the others wait for its answer.
* **Protecting the provider.** Every upstream call passes a per-endpoint
  circuit breaker; introspection also a rate limit and a concurrency cap.
  Refusals are 503 with ``Retry-After``, never 401.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx

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
from .claims import TokenClaims
from .errors import ConfigurationError, InvalidToken, ServiceUnavailable, TokenError
from .introspection import ClientAuthMethod, Introspection, IntrospectionResult, introspect_flow
from .issuer import IssuerRuntime, JWTIssuer
from .jwt import UnverifiedJWS, looks_like_jws, parse_jws, peek_issuer
from .limits import ConcurrencyLimit, IntrospectionLimits, RateLimiter
from .metrics import Metrics, MetricsSnapshot
from .scopes import DEFAULT_SCOPE_CLAIMS, ScopeRequirement
from .shared import (
    SharedAdd,
    SharedDelete,
    SharedGet,
    SharedPolicy,
    SharedSet,
    SharedStore,
    SharedWait,
    decode_result,
    encode_result,
    lock_key,
    result_key,
)
from .sources import FetchSettings, MetadataSource, check_url
from .userinfo import interpret_userinfo

if TYPE_CHECKING:
    from .dpop import DPoPMode, DPoPSettings
    from .forwarded import TrustedProxies
    from .mtls import MTLSSettings
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
        http_client: httpx.Client | None = None,
        async_http_client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        verifier: CustomVerifier | None = None,
        verifier_cache_ttl: float = 60.0,
        userinfo_cache_ttl: float = 60.0,
        breaker: BreakerSettings | None = None,
        introspection_limits: IntrospectionLimits | None = None,
        dpop: DPoPSettings | DPoPMode | None = None,
        mtls: MTLSSettings | bool | None = None,
        trusted_proxies: TrustedProxies | None = None,
        resource: str | None = None,
        resource_name: str | None = None,
    ) -> None:
        if not issuers and introspection is None and verifier is None:
            raise ConfigurationError("configure at least one issuer, introspection or a custom verifier")
        self._verifier = verifier
        self._verifier_cache_ttl = verifier_cache_ttl
        self.realm = realm
        self.max_token_bytes = max_token_bytes
        self.allow_query_token = allow_query_token
        self.allow_form_token = allow_form_token
        self.include_error_details = include_error_details
        self.resource_metadata = resource_metadata
        self.clock = clock
        from .sender_config import sender_settings

        self.dpop, self.mtls, self.trusted_proxies = sender_settings(dpop, mtls, trusted_proxies)
        self.resource = resource
        self.resource_name = resource_name
        #: Scopes named by route requirements, for the RFC 9728 document.
        self.route_scopes: set[str] = set()
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
        #: Shared-store locks this process holds (introspections it leads).
        self._leading: set[str] = set()
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
            raise ConfigurationError("check_revocation needs introspection to be configured")
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
                check_url(introspection.endpoint, require_https=self._require_https(), what="introspection endpoint")
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
        if hash_key is None and shared is not None:
            hash_key = self._shared_hash_key()
        self._hasher = TokenHasher(hash_key)
        self._hash_inner, self._hash_outer = self._hasher.keyed_states()
        self._cache_get = self._cache.get  # bound once: read on every request
        if shared is not None:
            policy = SharedPolicy(shared.lock_ttl, shared.lock_wait)
            for source in self._metadata.values():
                source.shared = policy
            for runtime in self._issuers.values():
                if runtime.jwks is not None:
                    runtime.jwks.shared = policy
        limits = introspection_limits or IntrospectionLimits()
        self._rate = RateLimiter(limits)
        self._breakers = CircuitBreakers(breaker or BreakerSettings())
        caps = {"introspection": ConcurrencyLimit(limits.max_concurrent, limits.max_wait)}
        self._upstream = Upstream(
            breakers=self._breakers,
            metrics=self._metrics,
            limits=caps if limits.max_concurrent > 0 else None,
            shared=shared,
            clock=clock,
        )

    def _shared_hash_key(self) -> bytes:
        # Processes sharing a store must agree on the HMAC key. An explicit key
        # is best; failing that, one derived from what every worker of this
        # API is configured with, and secret when a client secret is among it.
        configured = os.environ.get("TOKENGUARD_HASH_KEY")
        if configured:
            return configured.encode()
        parts = ["tokenguard shared cache key v1", *sorted(self._issuers)]
        if self._introspection is not None:
            config = self._introspection
            parts += [config.endpoint or "", config.issuer or "", config.client_id, config.client_secret]
        else:
            logger.info("shared cache: no hash_key or client secret configured; cache keys are not secret")
        return hashlib.sha256("\0".join(parts).encode()).digest()

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
        token_types: Sequence[str] = (),
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
            issuer_options["scope_claims"] = tuple(scope_claims)
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
        **options: Any,
    ) -> TokenGuard:
        """A guard with static keys: no network at all.

        ``keys`` takes PEM/DER public keys, ``cryptography`` keys or JWK dicts;
        ``jwks`` a JWK Set; ``hmac_keys`` shared secrets by ``kid`` for
        issuers that sign with HS256 (e.g. the DIAN identity service).
        Issuer options (``leeway``, ``token_types``…) and guard options are
        both accepted as keywords.
        """
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
            raise ConfigurationError("from_keys needs jwks, keys or hmac_keys")
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
            elif not _serves(entry, now):
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
        # It is _serves() spelled out. Anything else (misses, cached rejections,
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
        self._keep(key, self._jwt_entry(claims, runtime, thumbprint, now, None), now)
        return claims

    def _verify_flow(
        self, token: str, jws: UnverifiedJWS | None, key: bytes, now: float, client: str | None
    ) -> GuardFlow[TokenClaims]:
        runtime = None
        if jws is not None:
            iss = peek_issuer(jws)
            runtime = self._issuers.get(iss) if iss is not None else None
        shared = self._shared
        if shared is not None and (
            self._shares_jwt(runtime, shared) if runtime is not None else self._may_go_upstream(jws)
        ):
            found = yield from self._shared_lookup(key, now)
            if found is not None:
                return found
        if runtime is not None:
            assert jws is not None
            self._events["jwt_verified_locally"] += 1
            claims, thumbprint = yield from runtime.verify_flow(jws, now)
            cache_until = None
            leader = False
            if runtime.config.check_revocation and self._introspection is not None:
                found, leader = yield from self._before_introspection(key, now, client)
                if found is not None:
                    return found
                result = yield from self._introspect(token, key, now, leader)
                cache_until = now + result.ttl
            entry = self._jwt_entry(claims, runtime, thumbprint, now, cache_until)
            share = shared is not None and self._shares_jwt(runtime, shared)
            yield from self._store(key, entry, now, share=share, release=leader)
            return claims
        if self._verifier is not None:
            answer = yield CallVerifier(self._verifier, token)
            if answer is not None:
                return (yield from self._store_custom(key, answer, now))
        if jws is not None and not self._may_introspect(peek_issuer(jws)):
            raise InvalidToken("untrusted issuer")
        if self._introspection is None:
            raise InvalidToken("token format not accepted")
        found, leader = yield from self._before_introspection(key, now, client)
        if found is not None:
            return found
        result = yield from self._introspect(token, key, now, leader)
        opaque_claims = result.claims
        assert opaque_claims is not None
        return (yield from self._store_opaque(key, opaque_claims, result.ttl, now, leader))

    def _may_go_upstream(self, jws: UnverifiedJWS | None) -> bool:
        # Only a token that would cost an upstream call is looked up in the
        # shared store: one naming an untrusted issuer is refused without any
        # network traffic at all, the cache's included.
        if self._verifier is not None:
            return True
        return self._introspection is not None and (jws is None or self._may_introspect(peek_issuer(jws)))

    @staticmethod
    def _shares_jwt(runtime: IssuerRuntime, shared: SharedStore) -> bool:
        # A verified JWT is worth sharing only when it cost an upstream call.
        return shared.share_jwt_results or runtime.config.check_revocation

    # ------------------------------------------------------------------ two-level cache

    def _store(self, key: bytes, entry: CachedResult, now: float, *, share: bool, release: bool) -> GuardFlow[None]:
        """Keep ``entry`` in process and, when ``share``, in the shared store; free the lock we hold."""
        self._keep(key, entry, now)
        shared = self._shared
        if shared is None:
            return
        if share:
            data = encode_result(entry)
            if data is not None:
                yield SharedSet(result_key(key), data, entry.cache_until - now)
        if release:
            yield from self._release(key)

    def _keep(self, key: bytes, entry: CachedResult, now: float) -> None:
        """Keep ``entry`` in process (for at most ``local_ttl`` in front of a shared store)."""
        shared = self._shared
        self._cache.set(key, entry if shared is None else _capped(entry, now + shared.local_ttl))

    def _release(self, key: bytes) -> GuardFlow[None]:
        lock = lock_key(result_key(key))
        self._leading.discard(lock)
        yield SharedDelete(lock)

    def _shared_lookup(self, key: bytes, now: float) -> GuardFlow[TokenClaims | None]:
        data = yield SharedGet(result_key(key))
        if data is None:
            self._events["shared_cache_miss"] += 1
            return None
        return self._accept_shared(key, data, now)

    def _accept_shared(self, key: bytes, data: bytes, now: float) -> TokenClaims | None:
        """Claims from another process's entry (kept locally too), ``None`` if unusable.

        Raises:
            InvalidToken: the entry is a cached rejection.
        """
        entry = decode_result(data)
        if entry is None or now >= entry.cache_until:
            self._events["shared_cache_miss"] += 1
            return None
        claims = entry.claims
        if claims is not None:
            if entry.key_thumbprint is not None:
                # Judged against the keys this process trusts: a result signed
                # by a key since withdrawn here is verified afresh.
                runtime = self._issuers.get(entry.issuer or "")
                if runtime is None:
                    return None
                entry.key_owner = runtime.key_owner
            if not _serves(entry, now):
                return None
        self._events["shared_cache_hit"] += 1
        assert self._shared is not None
        self._cache.set(key, _capped(entry, now + self._shared.local_ttl))
        if claims is None:
            raise InvalidToken(entry.reason or "invalid token")
        return claims

    def _before_introspection(
        self, key: bytes, now: float, client: str | None
    ) -> GuardFlow[tuple[TokenClaims | None, bool]]:
        """Rate limits, then (with a shared store) elect one process to call.

        Returns claims another process obtained meanwhile, or ``None``, and
        whether this caller holds the lock (and must release it).

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
        shared = self._shared
        if shared is None:
            return None, False
        rkey = result_key(key)
        lock = lock_key(rkey)
        if lock in self._leading:
            # Another thread or task of this process holds the lock: the
            # in-process coalescer joins its call, no need to poll Redis.
            return None, False
        if (yield SharedAdd(lock, shared.lock_ttl)):
            self._leading.add(lock)
            # Double-checked: a winner may have stored its answer and released
            # the lock between our first read and our lock.
            data = yield SharedGet(rkey)
            try:
                found = self._accept_shared(key, data, now) if data is not None else None
            except InvalidToken:  # a cached rejection: nothing to call for
                yield from self._release(key)
                raise
            if found is not None:
                yield from self._release(key)
                return found, False
            return None, True
        data = yield SharedWait(rkey, lock, shared.lock_wait)
        if data is not None:
            found = self._accept_shared(key, data, now)
            if found is not None:
                return found, False
        return None, False

    def _store_opaque(
        self, key: bytes, claims: TokenClaims, ttl: float, now: float, release: bool
    ) -> GuardFlow[TokenClaims]:
        assert self._introspection is not None
        leeway = self._introspection.leeway
        entry = CachedResult(
            claims,
            now + ttl,
            valid_from=claims.nbf - leeway if claims.nbf is not None else float("-inf"),
            valid_until=claims.exp + leeway if claims.exp is not None else float("inf"),
        )
        yield from self._store(key, entry, now, share=True, release=release)
        return claims

    def _introspect(self, token: str, key: bytes, now: float, release: bool) -> GuardFlow[IntrospectionResult]:
        """Introspect ``token``; an inactive answer is cached briefly and raised."""
        assert self._introspection is not None
        self._events["introspection"] += 1
        try:
            result = yield from introspect_flow(
                token,
                self._introspection,
                self._introspection_metadata,
                now,
                coalesce_key="POST introspect " + key.hex(),
                keys_flow=self._introspection_keys,
            )
        except ServiceUnavailable:
            if release:
                yield from self._release(key)
            raise
        except GeneratorExit:
            # Cancelled mid-call: nothing may be yielded now. The Redis lock
            # expires by itself; this process must just stop counting it as held.
            self._leading.discard(lock_key(result_key(key)))
            raise
        if result.claims is None:
            entry = CachedResult(None, now + result.ttl, reason=result.reason)
            if result.ttl > 0:
                yield from self._store(key, entry, now, share=True, release=release)
            elif release:
                yield from self._release(key)
            raise InvalidToken(result.reason)
        return result

    def _store_custom(self, key: bytes, answer: object, now: float) -> GuardFlow[TokenClaims]:
        if not isinstance(answer, Mapping):
            raise TypeError("a custom verifier must return a mapping of claims or None")
        claims = TokenClaims(answer, token_type="custom")
        if claims.exp is not None and now >= claims.exp:
            raise InvalidToken("token expired")
        cache_until = now + self._verifier_cache_ttl
        if claims.exp is not None:
            cache_until = min(cache_until, claims.exp)
        entry = CachedResult(claims, cache_until, valid_until=claims.exp or float("inf"))
        yield from self._store(key, entry, now, share=True, release=False)
        return claims

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

        self.route_scopes.update(scopes)
        policy = RoutePolicy.of(self, acr_values=acr_values, max_age=max_age, dpop=dpop)
        return Requirement(self, ScopeRequirement(tuple(scopes), any_of), policy)

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


def _serves(entry: CachedResult, now: float) -> bool:
    """Whether a positive entry may answer now: inside its lifetime and time
    window, and, for a JWT, its key still trusted (an empty set of trusted
    fingerprints: this process has not loaded the keys yet, so the entry came
    from the shared store; local results load them). The hit in
    :meth:`TokenGuard.verify_sync` and :meth:`TokenGuard.verify` is this,
    inlined."""
    if not (now < entry.cache_until and entry.valid_from <= now < entry.valid_until):
        return False
    owner = entry.key_owner
    if owner is None:
        return entry.key_thumbprint is None  # not a JWT: no key to outlive
    return entry.key_thumbprint in owner.current_thumbprints or not owner.current_thumbprints


def _capped(entry: CachedResult, until: float) -> CachedResult:
    """``entry`` with its cache lifetime cut to ``until`` (the in-process level in front of a shared store)."""
    if entry.cache_until <= until:
        return entry
    return CachedResult(
        entry.claims,
        until,
        valid_from=entry.valid_from,
        valid_until=entry.valid_until,
        reason=entry.reason,
        issuer=entry.issuer,
        key_thumbprint=entry.key_thumbprint,
        key_owner=entry.key_owner,
    )
