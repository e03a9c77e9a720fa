"""``TokenGuard``: the one object every adapter calls (the facade).

Strategy: a guard is built once, then only answers. Building is
``_assembly.py``'s job (``Assembly`` checks every option and wires the
parts; ``TokenGuard`` inherits them); this module holds the public API and
the hot path, and hands the rest to the part whose job it is:

* ``routing.py``: a miss (``Router.verify_miss``): which method verifies a
  token (local JWT, custom verifier, introspection) and the flow that does it;
* ``results.py``: cache entries and the one rule for serving them;
  ``store.py``: the two-level result store (verdicts in process, keyed by
  this guard's policy; facts shared across processes, sealed);
* ``introspection_route.py``: introspection answers with the store (one
  call across processes, rate limits); ``userinfo.py``: UserInfo;
* ``_runner.py``: the only code that performs effects (HTTP, the shared
  store, the custom verifier), under ``upstream.py``'s policy (breakers,
  caps, one total deadline, metrics per call);
* ``_route_scopes.py``: the scopes routes declare, checked against each
  issuer's ``scopes_supported``; ``_error_response.py``: what a refused
  request is answered; ``stats.py``: counters and the log line of a refusal.

:meth:`TokenGuard.verify` and :meth:`TokenGuard.verify_sync` answer a cached
token inline (one keyed hash, one dict read, :func:`results.serves` spelled
out); a miss builds the flow once and runs it with the sync or async runner.
Errors are :class:`~tokenguard.TokenError` subclasses;
:meth:`TokenGuard.error_response` turns one into status, headers and body.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from . import readiness
from ._assembly import Assembly
from ._clients import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ._error_response import ErrorResponse, render_error
from ._runner import run_async, run_sync
from .bearer import DEFAULT_MAX_TOKEN_BYTES, extract_token
from .builders import discovery_configs, static_keys_config
from .claims import TokenClaims
from .errors import TokenError
from .introspection import ClientAuthMethod, Introspection
from .issuer import JWTIssuer
from .metrics import MetricsSnapshot
from .routing import CustomVerifier
from .scopes import ScopeRequirement
from .sender_config import check_direct_verify, metadata_document
from .sources import FetchSettings
from .stats import log_rejection, stats_of
from .upstream import DEFAULT_DEADLINE as DEFAULT_DEADLINE

if TYPE_CHECKING:
    from .breaker import BreakerSettings
    from .cache import CacheBackend
    from .dpop import DPoPMode, DPoPSettings
    from .forwarded import TrustedProxies
    from .limits import IntrospectionLimits
    from .mtls import MTLSSettings
    from .requirement import Requirement
    from .shared import SharedStore

__all__ = ["CustomVerifier", "ErrorResponse", "TokenGuard"]


class TokenGuard(Assembly):
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
        super().__init__(
            issuers,
            introspection,
            realm=realm,
            cache=cache,
            hash_key=hash_key,
            max_token_bytes=max_token_bytes,
            allow_query_token=allow_query_token,
            allow_form_token=allow_form_token,
            include_error_details=include_error_details,
            resource_metadata=resource_metadata,
            timeout=timeout,
            deadline=deadline,
            http_client=http_client,
            async_http_client=async_http_client,
            clock=clock,
            verifier=verifier,
            verifier_cache_ttl=verifier_cache_ttl,
            userinfo_cache_ttl=userinfo_cache_ttl,
            breaker=breaker,
            introspection_limits=introspection_limits,
            proof_of_possession=proof_of_possession,
            dpop=dpop,
            mtls=mtls,
            trusted_proxies=trusted_proxies,
            resource=resource,
            resource_name=resource_name,
        )

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
        jwt_issuer, introspection = discovery_configs(
            issuer,
            audience=audience,
            client_id=client_id,
            client_secret=client_secret,
            auth_method=auth_method,
            introspection_endpoint=introspection_endpoint,
            jwks_uri=jwks_uri,
            discovery_url=discovery_url,
            algorithms=algorithms,
            token_types=token_types,
            required_claims=required_claims,
            scope_claims=scope_claims,
            leeway=leeway,
            introspection_cache_ttl=introspection_cache_ttl,
            check_revocation=check_revocation,
            fetch=fetch,
            signed_introspection=signed_introspection,
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
        config = static_keys_config(
            options,
            issuer=issuer,
            audience=audience,
            jwks=jwks,
            keys=keys,
            hmac_keys=hmac_keys,
            algorithms=algorithms,
            allow_short_hmac_secret=allow_short_hmac_secret,
        )
        return cls([config], **options)

    # ------------------------------------------------------------------ verification

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
        # The hot path, inlined (a call costs ~10 % of a hit): keyed hash, dict
        # read, results.serves() spelled out. verify() holds the same lines;
        # tests/test_results.py pins both to serves(). Anything else (misses,
        # cached rejections, stale entries) goes to Router.verify_miss.
        cache_key = entry = None
        if len(token) <= self.max_token_bytes:
            inner = self._hash_inner.copy()
            inner.update(token.encode("utf-8", "surrogateescape"))
            outer = self._hash_outer.copy()
            outer.update(inner.digest())
            cache_key = outer.digest()
            entry = self._cache_get(cache_key)
            if entry is not None and now < entry.cache_until and entry.valid_from <= now < entry.valid_until:
                hit = entry.claims
                owner = entry.key_owner
                if hit is not None and (
                    entry.key_thumbprint is None
                    if owner is None
                    else entry.key_thumbprint in owner.current_thumbprints or not owner.current_thumbprints
                ):
                    self._hits += 1
                    return self._direct(token, hit) if self._direct_check else hit
        try:
            claims, flow = self._router.verify_miss(token, now, cache_key, entry, client)
            if claims is None:
                assert flow is not None
                claims = run_sync(flow, self._sync_client, self._sync_coalescer, self._upstream)
        except TokenError as exc:
            log_rejection(self._metrics, self._hasher, self.max_token_bytes, token, exc)
            raise
        return self._direct(token, claims) if self._direct_check else claims

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
        cache_key = entry = None
        if len(token) <= self.max_token_bytes:
            inner = self._hash_inner.copy()
            inner.update(token.encode("utf-8", "surrogateescape"))
            outer = self._hash_outer.copy()
            outer.update(inner.digest())
            cache_key = outer.digest()
            entry = self._cache_get(cache_key)
            if entry is not None and now < entry.cache_until and entry.valid_from <= now < entry.valid_until:
                hit = entry.claims
                owner = entry.key_owner
                if hit is not None and (
                    entry.key_thumbprint is None
                    if owner is None
                    else entry.key_thumbprint in owner.current_thumbprints or not owner.current_thumbprints
                ):
                    self._hits += 1
                    return self._direct(token, hit) if self._direct_check else hit
        try:
            claims, flow = self._router.verify_miss(token, now, cache_key, entry, client)
            if claims is None:
                assert flow is not None
                claims = await run_async(flow, self._async_client, self._async_coalescer, self._upstream)
        except TokenError as exc:
            log_rejection(self._metrics, self._hasher, self.max_token_bytes, token, exc)
            raise
        return self._direct(token, claims) if self._direct_check else claims

    def _direct(self, token: str, claims: TokenClaims) -> TokenClaims:
        # DPoP/mTLS configured: a call outside request_auth has no proof and
        # no certificate; judge the token as plain Bearer (RFC 9449 §7.2).
        try:
            check_direct_verify(self, claims)
        except TokenError as exc:
            log_rejection(self._metrics, self._hasher, self.max_token_bytes, token, exc)
            raise
        return claims

    @property
    def stats(self) -> dict[str, int]:
        """Counters: ``cache_hit``, ``cache_miss``, ``jwt_verified_locally``, ``introspection``,
        ``shared_cache_hit`` / ``_miss``, ``upstream_calls``, ``upstream_failures``...

        Approximate under heavy concurrency (hot-path increments are not locked).
        """
        return stats_of(self.metrics())

    def metrics(self) -> MetricsSnapshot:
        """Every counter, upstream latency histogram and breaker state, copied at once."""
        return self._metrics.snapshot(self._hits, self._router.misses, self._breakers.states())

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
        found = self._userinfo.lookup(token, claims, self.clock())
        if isinstance(found, TokenClaims):
            return found
        return run_sync(found, self._sync_client, self._sync_coalescer, self._upstream)

    async def userinfo(self, token: str) -> TokenClaims:
        """Async twin of :meth:`userinfo_sync`."""
        claims = await self.verify(token)
        found = self._userinfo.lookup(token, claims, self.clock())
        if isinstance(found, TokenClaims):
            return found
        return await run_async(found, self._async_client, self._async_coalescer, self._upstream)

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
                Bearer only). Needs DPoP enabled on the guard unless ``"disabled"``;
                a guard with ``dpop="required"`` cannot be relaxed per route.

        Raises:
            ConfigurationError: invalid step-up values or DPoP mode.
        """
        from .requirement import Requirement
        from .route_policy import RoutePolicy

        requirement = ScopeRequirement(tuple(scopes), any_of)  # validates the names first
        policy = RoutePolicy.of(self, acr_values=acr_values, max_age=max_age, dpop=dpop)
        self.declare_scopes(*scopes)
        return Requirement(self, requirement, policy)

    def declare_scopes(self, *scopes: str) -> None:
        """Tell the guard which scopes routes require, so a typo is caught early.

        :meth:`requires` declares its scopes itself; adapters and custom
        integrations call this for theirs. A scope absent from an issuer's
        ``scopes_supported`` can never be granted, so its route would answer
        403 to everyone: the guard logs one WARNING per such scope when the
        issuer's metadata is first loaded (or now, if it already is).

        Raises:
            ConfigurationError: a scope is not a valid scope name (RFC 6749
                §3.3), checked before anything is declared.
        """
        self._route_scopes.declare(scopes)

    @property
    def route_scopes(self) -> frozenset[str]:
        """Every scope the routes declared (:meth:`declare_scopes`), for the RFC 9728 document."""
        return self._route_scopes.declared

    # ------------------------------------------------------------------ readiness

    async def check(self) -> readiness.ReadinessReport:
        """Fetch every issuer's metadata and keys and test the introspection credentials.

        For start-up and readiness probes: see :func:`tokenguard.readiness.check`.
        """
        return await readiness.check(self)

    def check_sync(self) -> readiness.ReadinessReport:
        """Blocking twin of :meth:`check` (see :func:`tokenguard.readiness.check_sync`)."""
        return readiness.check_sync(self)

    def protected_resource_metadata(self) -> dict[str, Any]:
        """This API's RFC 9728 protected-resource metadata document.

        Raises:
            ConfigurationError: the guard has no ``resource``.
        """
        return metadata_document(self)

    def error_response(self, error: TokenError) -> ErrorResponse:
        """Status, headers and body to send for ``error``."""
        self._events[f"rejected_{error.status_code}"] += 1
        return render_error(
            error,
            realm=self.realm,
            include_description=self.include_error_details,
            resource_metadata=self.resource_metadata,
            dpop=self.dpop,
        )

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the HTTP clients tokenguard created (sync side), and the shared store's."""
        self._clients.close()
        close_store = getattr(self._shared, "close", None)
        if close_store is not None:
            close_store()

    async def aclose(self) -> None:
        """Close the HTTP clients tokenguard created, including this loop's async one."""
        self.close()
        await self._clients.aclose()
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
