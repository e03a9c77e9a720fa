"""Where keys and metadata come from: discovery documents and JWK Sets.

Strategy: each fetched document has a :class:`DocumentState`, an immutable
snapshot replaced on every transition (``fetched``, ``failed``); decisions are
pure functions of the snapshot and ``now``. The flows (``metadata_flow``,
``keys_flow``) yield HTTP requests and apply replies; the runners in
``_runner.py`` coalesce concurrent fetches of the same URL.

* Freshness follows upstream ``Cache-Control: max-age`` (less ``Age``),
  clamped to ``[min_ttl, max_ttl]``; the default applies when none is sent.
* An unknown ``kid`` triggers a refetch at most once per
  ``kid_refetch_cooldown``, however many unknown kids arrive.
* When a refresh fails, the last good document keeps serving until
  ``max_staleness`` past its freshness; after that, 503.
* Failed fetches are never cached as results, but a new attempt waits
  ``failed_retry_interval`` so an outage is not turned into a request storm.
* URLs come only from configuration and from the configured issuer's own
  metadata; nothing named inside a token is ever fetched.
* With a shared store (``shared`` set by the guard), a copy fetched by
  another process and newer than ours is used before the network, and only
  one process at a time fetches a document (see ``shared.py``). Copies from
  the store pass the same checks as replies from the network.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from . import diagnostics
from ._effects import DEFAULT_MAX_RESPONSE_BYTES, Flow, HttpReply, HttpRequest, json_object
from ._urlredact import keep_out_of_logs
from .cachecontrol import document_ttl
from .errors import ConfigurationError, ServiceUnavailable
from .keys import KeySet, parse_jwks
from .shared import SharedPolicy, publish_flow, shared_copy_flow, shared_fetch_flow

__all__ = [
    "DEFAULT_KID_REFETCH_COOLDOWN",
    "DocumentState",
    "FetchSettings",
    "JWKSSource",
    "MetadataSource",
    "discovery_urls",
]

logger = logging.getLogger("tokenguard.sources")

#: Minimum time between refetches triggered by unknown ``kid`` values.
#: Precedents: panva/jose 30 s, oauth4webapi 60 s, Microsoft.IdentityModel 5 min.
DEFAULT_KID_REFETCH_COOLDOWN = 30.0


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` names this machine (plain HTTP is tolerated there).

    The host is parsed as an IP address (``127.0.0.0/8`` or ``::1``) or must
    be exactly ``localhost`` (RFC 6761 §6.3): a name such as
    ``127.attacker.example`` resolves wherever its owner wants.
    """
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(
    url: str, *, require_https: bool, what: str, opt_out: str = "fetch=FetchSettings(require_https=False)"
) -> str:
    """Validate a configured or discovered URL; return it unchanged.

    A URL carrying credentials (``user:password@``, a query) is registered
    so that httpx's request log lines show it without them.

    ``opt_out`` is how the caller's user turns the https rule off, named in
    the error exactly as they must write it (the token client's
    ``require_https=False``, the command's ``--allow-http``).

    Raises:
        ConfigurationError: not an absolute http(s) URL, or plain http to a
            non-loopback host while ``require_https``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigurationError(f"{what} must be an absolute http(s) URL")
    if parts.scheme == "http" and require_https and not is_loopback_host(parts.hostname):
        raise ConfigurationError(f"{what} must use https (pass {opt_out} only for trusted test networks)")
    if parts.fragment:
        raise ConfigurationError(f"{what} must not have a fragment")
    keep_out_of_logs(url)  # a user:password@ or a query secret stays out of httpx's log lines
    return url


@dataclass(frozen=True, slots=True)
class FetchSettings:
    """How metadata and key documents are fetched and kept.

    Args:
        min_ttl / max_ttl: bounds on the freshness derived from ``Cache-Control``.
            Precedents for fixed TTLs: Spring and Envoy 5 min, jose/Auth0 10 min,
            Microsoft.IdentityModel 12 h.
        default_ttl: freshness when the upstream sends no ``max-age``.
        kid_refetch_cooldown: see :data:`DEFAULT_KID_REFETCH_COOLDOWN`.
        max_staleness: how long past freshness the last good document may
            serve while the upstream is failing (Microsoft.IdentityModel keeps
            its last-known-good configuration for 1 h).
        failed_retry_interval: minimum time between attempts after a failure
            (Envoy's ``failed_refetch_duration`` is 1 s).
        max_keys: largest accepted JWK Set.
        max_response_bytes: largest accepted discovery or JWKS document.
        require_https: refuse plain-http URLs except on loopback.
    """

    min_ttl: float = 300.0
    max_ttl: float = 86400.0
    default_ttl: float = 600.0
    kid_refetch_cooldown: float = DEFAULT_KID_REFETCH_COOLDOWN
    max_staleness: float = 3600.0
    failed_retry_interval: float = 1.0
    max_keys: int = 100
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    require_https: bool = True

    def __post_init__(self) -> None:
        # Checked here, not when the first fetch compares a string with a float.
        durations = ("min_ttl", "max_ttl", "default_ttl", "kid_refetch_cooldown", "max_staleness")
        for name in (*durations, "failed_retry_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
                raise ConfigurationError(f"{name} must be a non-negative number of seconds, not {value!r}")
        for name in ("max_keys", "max_response_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be a positive integer, not {value!r}")
        if not isinstance(self.require_https, bool):
            raise ConfigurationError(f"require_https must be True or False, not {self.require_https!r}")
        if not 0 <= self.min_ttl <= self.max_ttl:
            raise ConfigurationError("FetchSettings needs 0 <= min_ttl <= max_ttl")


@dataclass(frozen=True, slots=True)
class DocumentState:
    """What is known about one document at a moment. Transitions return new states."""

    value: Any = None
    fetched_at: float | None = None
    fresh_until: float = 0.0
    last_attempt: float | None = None
    last_failure: float | None = None
    failures: int = 0
    #: Incremented by every fetch outcome, success or failure: a caller that
    #: saw generation g may share a reply fetched from g, never an older one.
    generation: int = 0

    def is_fresh(self, now: float) -> bool:
        return self.value is not None and now < self.fresh_until

    def is_usable(self, now: float, settings: FetchSettings) -> bool:
        """Fresh, or stale but within ``max_staleness`` (last-known-good)."""
        return self.value is not None and now < self.fresh_until + settings.max_staleness

    def may_attempt(self, now: float, settings: FetchSettings) -> bool:
        return self.last_failure is None or now - self.last_failure >= settings.failed_retry_interval

    def retry_after(self, now: float, settings: FetchSettings) -> int:
        if self.last_failure is None:
            return 1
        return max(1, int(self.last_failure + settings.failed_retry_interval - now + 0.999))

    def fetched(self, value: Any, now: float, ttl: float) -> DocumentState:
        return DocumentState(
            value=value, fetched_at=now, fresh_until=now + ttl, last_attempt=now, generation=self.generation + 1
        )

    def failed(self, now: float) -> DocumentState:
        return replace(
            self, last_attempt=now, last_failure=now, failures=self.failures + 1, generation=self.generation + 1
        )


def discovery_urls(issuer: str) -> list[str]:
    """Where an issuer's metadata may live, in the order to try.

    RFC 8414 §3.1 inserts the well-known segment between host and path; OIDC
    Discovery §4 appends it. For an issuer with a path, the order is the
    MCP / RFC 8414 §5 one: OAuth inserted, OIDC inserted, OIDC appended.
    """
    parts = urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    if not path:
        return [
            f"{origin}/.well-known/oauth-authorization-server",
            f"{origin}/.well-known/openid-configuration",
        ]
    return [
        f"{origin}/.well-known/oauth-authorization-server{path}",
        f"{origin}/.well-known/openid-configuration{path}",
        f"{issuer.rstrip('/')}/.well-known/openid-configuration",
    ]


def _ttl(reply: HttpReply, settings: FetchSettings) -> float:
    return document_ttl(
        reply.headers.get("cache-control"),
        reply.headers.get("age"),
        default=settings.default_ttl,
        minimum=settings.min_ttl,
        maximum=settings.max_ttl,
    )


def _newer(fetched_at: float, seen: float | None) -> bool:
    return seen is None or fetched_at > seen


def _one(request: HttpRequest) -> Callable[[], Flow[HttpReply]]:
    def flow() -> Flow[HttpReply]:
        reply: HttpReply = yield request
        return reply

    return flow


class MetadataSource:
    """An issuer's discovery document (OIDC Discovery or RFC 8414), cached.

    The document's ``issuer`` must equal the configured issuer exactly
    (RFC 8414 §3.3, OIDC Discovery §4.3): this stops a metadata mix-up from
    pointing us at another issuer's keys.
    """

    def __init__(self, issuer: str, settings: FetchSettings, *, discovery_url: str | None = None) -> None:
        self.issuer = issuer
        self.settings = settings
        if discovery_url is not None:
            check_url(discovery_url, require_https=settings.require_https, what="discovery_url")
        self.urls = [discovery_url] if discovery_url else discovery_urls(issuer)
        self.state = DocumentState()
        #: Set by the guard when a shared store is configured.
        self.shared: SharedPolicy | None = None
        #: Called with the document when it is first loaded (the guard checks route scopes).
        self.on_first_load: Callable[[dict[str, Any]], None] | None = None
        #: The last failure's description: repeated on every 503 until the cause changes.
        self.last_error = "authorization server metadata unavailable"

    def metadata_flow(self, now: float) -> Flow[dict[str, Any]]:
        """The metadata document, fetched when missing or stale."""
        state = self.state
        if state.is_fresh(now):
            return dict(state.value)
        if not state.may_attempt(now, self.settings):
            if state.is_usable(now, self.settings):
                return dict(state.value)
            raise ServiceUnavailable(self.last_error, retry_after=state.retry_after(now, self.settings))
        try:
            if self.shared is None:
                document, reply = yield from self._discover(state.generation)
            else:
                document, reply = yield from self._discover_shared(state, now, self.shared)
        except ServiceUnavailable as exc:
            self.state = self.state.failed(now)
            self.last_error = exc.description
            if self.state.is_usable(now, self.settings):
                logger.warning("metadata refresh failed for %s; using the last good document", self.issuer)
                return dict(self.state.value)
            raise
        self.state = self.state.fetched(document, now, _ttl(reply, self.settings))
        if state.fetched_at is None and self.on_first_load is not None:
            self.on_first_load(document)
        return dict(document)

    def _discover_shared(
        self, state: DocumentState, now: float, policy: SharedPolicy
    ) -> Flow[tuple[dict[str, Any], HttpReply]]:
        # Per issuer *and* discovery URL: one issuer may publish several
        # documents (Entra ID's "?appid=" metadata names app-specific keys),
        # and a guard must only ever take the one it is configured with.
        name = "\0".join(("metadata " + self.issuer, *self.urls))
        seen = state.fetched_at
        copy = yield from shared_copy_flow(name, now)
        if copy is not None and _newer(copy[1], seen):
            try:
                return self._document_of(copy[0], "shared copy"), copy[0]
            except ServiceUnavailable:
                seen = copy[1]

        def fetch() -> Flow[HttpReply]:
            _, reply = yield from self._discover(state.generation)
            return reply

        reply, fetched, leader = yield from shared_fetch_flow(name, seen, now, policy, fetch)
        document = self._document_of(reply, "discovery document")
        if fetched:
            yield from publish_flow(name, reply, now, _ttl(reply, self.settings), release=leader)
        return document, reply

    def _document_of(self, reply: HttpReply, where: str) -> dict[str, Any]:
        document = json_object(reply, "discovery")
        if document.get("issuer") != self.issuer:
            diagnostics.metadata_issuer_mismatch(where, self.issuer, document.get("issuer"))
            raise ServiceUnavailable("authorization server metadata names another issuer")
        return document

    def _discover(self, generation: int) -> Flow[tuple[dict[str, Any], HttpReply]]:
        last_status = None
        for url in self.urls:
            reply = yield HttpRequest(
                "GET",
                url,
                coalesce_key=f"GET {url}",
                purpose="discovery",
                generation=generation,
                max_bytes=self.settings.max_response_bytes,
            )
            if 400 <= reply.status < 500:
                last_status = reply.status
                continue  # not at this location; try the next well-known form
            return self._document_of(reply, f"discovery document at {url}"), reply
        diagnostics.upstream_failed("discovery", " , ".join(self.urls), f"no document (last status {last_status})")
        raise ServiceUnavailable(f"no discovery document found (last status {last_status})")

    def endpoint_flow(self, name: str, now: float) -> Flow[str | None]:
        """A validated endpoint URL from the metadata, or ``None`` if absent."""
        document = yield from self.metadata_flow(now)
        value = document.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise ServiceUnavailable(f"metadata {name} is not a string")
        try:
            return check_url(value, require_https=self.settings.require_https, what=name)
        except ConfigurationError as exc:
            logger.error("refusing %s from %s metadata: %s", name, self.issuer, exc)
            raise ServiceUnavailable(f"metadata {name} is not acceptable") from None


class JWKSSource:
    """An issuer's JWK Set: fetched, cached, refreshed on rotation, kept on outage."""

    def __init__(
        self,
        settings: FetchSettings,
        *,
        jwks_uri: str | None = None,
        metadata: MetadataSource | None = None,
    ) -> None:
        if jwks_uri is None and metadata is None:
            raise ConfigurationError("a JWKS source needs jwks_uri or issuer metadata")
        if jwks_uri is not None:
            check_url(jwks_uri, require_https=settings.require_https, what="jwks_uri")
        self.settings = settings
        self.jwks_uri = jwks_uri
        self.metadata = metadata
        self.state = DocumentState()
        #: Fingerprints of the keys now published, read on every cache hit (an
        #: attribute, not a method: the hot path avoids calls).
        self.current_thumbprints: frozenset[str] = frozenset()
        #: Set by the guard when a shared store is configured.
        self.shared: SharedPolicy | None = None
        self._last_reply: HttpReply | None = None
        self._last_kid_refetch: float | None = None
        #: The last failure's description: repeated on every 503 until the cause changes.
        self.last_error = "signing keys unavailable"

    def _needs_fetch(self, kid: str | None, now: float) -> bool:
        """Whether :meth:`keys_flow` must fetch: the set is stale, or lacks ``kid``
        and the unknown-kid cooldown allows a refetch. Reads only."""
        state = self.state
        if not state.is_fresh(now):
            return True
        if kid is None or state.value.has_kid(kid):
            return False
        # Unknown kid: maybe the issuer rotated. At most one such refetch per
        # cooldown, counted from the last refetch an unknown kid caused, so a
        # key rotated in right after a scheduled fetch is still seen at once.
        last = self._last_kid_refetch
        return last is None or now - last >= self.settings.kid_refetch_cooldown

    def keys_at_hand(self, kid: str | None, now: float) -> KeySet | None:
        """The key set if it is fresh and holds ``kid``: nothing to fetch or decide.

        ``None`` when :meth:`keys_flow` has work to do (first fetch, refresh,
        an unknown ``kid``); this is the test every new token passes first.
        """
        state = self.state
        if not state.is_fresh(now):
            return None
        keys: KeySet = state.value
        return keys if kid is None or keys.has_kid(kid) else None

    def keys_flow(self, kid: str | None, now: float) -> Flow[KeySet]:
        """The current key set, refreshed when stale or when ``kid`` is unknown."""
        if not self._needs_fetch(kid, now):
            keys: KeySet = self.state.value
            return keys
        state = self.state
        if state.is_fresh(now):
            # Fresh, yet without the kid: this fetch is the cooldown's one unknown-kid refetch.
            self._last_kid_refetch = now
        if not state.may_attempt(now, self.settings):
            if state.is_usable(now, self.settings):
                keys = state.value
                return keys
            raise ServiceUnavailable(self.last_error, retry_after=state.retry_after(now, self.settings))
        try:
            uri = self.jwks_uri
            if uri is None:
                assert self.metadata is not None
                uri = yield from self.metadata.endpoint_flow("jwks_uri", now)
                if uri is None:
                    raise ServiceUnavailable("authorization server metadata has no jwks_uri")
            request = HttpRequest(
                "GET",
                uri,
                headers=(("Accept", "application/jwk-set+json, application/json"),),
                coalesce_key=f"GET {uri}",
                purpose="jwks",
                generation=state.generation,
                max_bytes=self.settings.max_response_bytes,
            )
            if self.shared is None:
                keys = self._apply((yield request), now)
            else:
                keys = yield from self._keys_shared(request, kid, now, self.shared)
        except ServiceUnavailable as exc:
            self.state = self.state.failed(now)
            self.last_error = exc.description
            if self.state.is_usable(now, self.settings):
                logger.warning("JWKS refresh failed; using the last good key set")
                keys = self.state.value
                return keys
            raise
        return keys

    def _keys_shared(self, request: HttpRequest, kid: str | None, now: float, policy: SharedPolicy) -> Flow[KeySet]:
        seen = self.state.fetched_at
        copy = yield from shared_copy_flow(request.url, now)
        if copy is not None and _newer(copy[1], seen):
            try:
                keys = self._apply(copy[0], now)
            except ServiceUnavailable:
                keys = None
            if keys is not None and (kid is None or keys.has_kid(kid)):
                return keys
            seen = copy[1]  # that copy lacks the kid: wait only for a newer one
        reply, fetched, leader = yield from shared_fetch_flow(request.url, seen, now, policy, _one(request))
        keys = self._apply(reply, now)
        if fetched:
            yield from publish_flow(request.url, reply, now, _ttl(reply, self.settings), release=leader)
        return keys

    def _apply(self, reply: HttpReply, now: float) -> KeySet:
        if reply is self._last_reply and self.state.value is not None:
            # A coalesced waiter: the leader already parsed this very reply.
            keys: KeySet = self.state.value
            return keys
        document = json_object(reply, "JWKS")
        try:
            keys, skipped = parse_jwks(document, max_keys=self.settings.max_keys)
        except ValueError as exc:
            raise ServiceUnavailable(f"JWKS rejected: {exc}") from None
        for reason in skipped:
            logger.warning("JWKS: skipped unusable %s", reason)
        if len(keys) == 0:
            raise ServiceUnavailable("JWKS holds no usable key")
        self.state = self.state.fetched(keys, now, _ttl(reply, self.settings))
        self.current_thumbprints = keys.thumbprints()
        self._last_reply = reply
        return keys
