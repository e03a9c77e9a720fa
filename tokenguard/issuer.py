"""A trusted JWT issuer: its configuration, and the keys and policy built from it."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._config import string_tuple
from ._effects import Flow
from ._logtext import loggable
from ._memo import HEADER_CHECKS_LIMIT, remember
from .claims import TokenClaims, verified_jwt_claims
from .errors import ConfigurationError
from .jwt import (
    DEFAULT_LEEWAY,
    JWTPolicy,
    UnverifiedJWS,
    algorithms_of,
    check_claims,
    check_header,
    check_signature,
    verify_jws,
)
from .keys import HMAC_ALGORITHMS, KeySet, VerificationKey, parse_jwk, parse_jwks
from .scopes import DEFAULT_SCOPE_CLAIMS
from .sources import FetchSettings, JWKSSource, MetadataSource, check_url

__all__ = ["JWTIssuer"]

logger = logging.getLogger("tokenguard")


@dataclass(frozen=True, slots=True)
class JWTIssuer:
    """An issuer whose JWT access tokens are verified locally.

    Keys come from, in order of precedence: ``keys``/``jwks``/``hmac_keys``
    (static, no network), ``jwks_uri``, or the issuer's discovery document.

    Every sequence option refuses a bare string (``algorithms="RS256"`` is a
    :class:`ConfigurationError`, not five one-letter algorithms); ``audience``
    alone takes one string as the one accepted audience. ``repr()`` never
    shows key material.

    Args:
        issuer: the exact ``iss`` value the tokens carry.
        audience: the accepted ``aud`` value(s): one string or a sequence.
            ``None`` skips the audience check and logs a WARNING: an issuer
            mints tokens for many audiences (ID tokens carry the client's
            ``client_id``), and without this check any of them is accepted.
            Use it only when the issuer mints tokens for this API alone.
        jwks_uri: fetch keys here instead of discovering them.
        discovery_url: fetch metadata here instead of the well-known URLs.
        keys: static keys: ``VerificationKey`` objects, PEM/DER bytes or
            strings, ``cryptography`` public keys, or JWK dicts.
        jwks: a static JWK Set document.
        hmac_keys: shared HMAC secrets by ``kid`` (``None`` for tokens without
            one). Only for issuers that sign with HS256/384/512 by design.
        algorithms: the allow-list; default every asymmetric algorithm, plus
            the HMAC ones when ``hmac_keys`` are given.
        leeway: tolerated clock skew in seconds (default 60). Larger values
            keep expired tokens usable for longer.
        require_exp: refuse tokens without ``exp`` (default on).
        required_claims: claims every token must carry.
        token_types: accepted ``typ`` values, e.g. ``("at+jwt",)`` for RFC
            9068; ``None`` among them accepts a token without ``typ``. Empty
            (default): any ``typ`` except one naming another kind of JWT
            (``dpop+jwt``, ``logout+jwt``, any ``*+jwt`` but ``at+jwt``, ``JWE``;
            RFC 8725 §3.11), and tokens without one.
        max_token_age: refuse tokens issued longer ago than this (seconds).
        scope_claims: claims read for scopes (default ``scope``, ``scp``).
        fetch: fetch and cache settings for discovery and JWKS.
        check_revocation: also introspect this issuer's JWTs after local
            verification, so revoked JWTs are refused (IdentityServer accepts
            JWTs at its introspection endpoint for this). Costs one call per
            token per introspection cache period; needs introspection configured.
    """

    issuer: str
    audience: str | Sequence[str] | None
    jwks_uri: str | None = None
    discovery_url: str | None = None
    keys: Sequence[Any] = field(default=(), repr=False)
    jwks: Mapping[str, Any] | None = field(default=None, repr=False)
    hmac_keys: Mapping[str | None, str | bytes] | None = field(default=None, repr=False)
    algorithms: Iterable[str] | None = None
    leeway: float = DEFAULT_LEEWAY
    require_exp: bool = True
    required_claims: Sequence[str] = ()
    token_types: Sequence[str | None] = ()
    max_token_age: float | None = None
    scope_claims: Sequence[str] = DEFAULT_SCOPE_CLAIMS
    fetch: FetchSettings = FetchSettings()
    check_revocation: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.issuer, str) or not self.issuer:
            raise ConfigurationError("issuer must be a non-empty string")
        set_field = object.__setattr__
        if self.audience is None:
            logger.warning(
                "issuer %s: audience=None, the audience check is off; tokens this issuer minted for any "
                "other audience (ID tokens included) will be accepted. Set audience= to this API's identifier.",
                loggable(self.issuer),
            )
        elif not isinstance(self.audience, str):
            audiences = string_tuple(self.audience, "audience")
            if not audiences or not all(audiences):
                raise ConfigurationError("audience must name at least one non-empty audience (or be None)")
            set_field(self, "audience", audiences)
        elif not self.audience:
            raise ConfigurationError("audience must be a non-empty string (or None)")
        if self.algorithms is not None:
            set_field(self, "algorithms", string_tuple(self.algorithms, "algorithms"))
        set_field(self, "required_claims", string_tuple(self.required_claims, "required_claims"))
        set_field(self, "scope_claims", string_tuple(self.scope_claims, "scope_claims"))
        if isinstance(self.token_types, str | bytes) or not all(
            t is None or isinstance(t, str) for t in self.token_types
        ):
            raise ConfigurationError(
                f"token_types must be a sequence of strings (None for an absent typ), not {self.token_types!r}"
            )
        set_field(self, "token_types", tuple(self.token_types))
        if isinstance(self.keys, str | bytes) or isinstance(self.keys, Mapping):
            raise ConfigurationError("keys must be a sequence of keys: wrap a single key as keys=[key]")
        set_field(self, "keys", tuple(self.keys))

    def __repr__(self) -> str:
        # Never key material: keys, jwks and hmac_keys are summarised.
        published = (self.jwks or {}).get("keys")
        static = len(self.keys) + (len(published) if isinstance(published, list) else 0) + len(self.hmac_keys or {})
        return (
            f"JWTIssuer(issuer={self.issuer!r}, audience={self.audience!r}, "
            f"static_keys={static}, jwks_uri={self.jwks_uri!r})"
        )

    def policy(self) -> JWTPolicy:
        """The claim and header rules for this issuer."""
        algorithms = algorithms_of(self.algorithms)
        if self.algorithms is None and self.hmac_keys:
            algorithms = algorithms | HMAC_ALGORITHMS
        return JWTPolicy(
            issuer=self.issuer,
            audiences=JWTPolicy.audiences_of(self.audience),
            algorithms=algorithms,
            leeway=self.leeway,
            require_exp=self.require_exp,
            required_claims=tuple(self.required_claims),
            token_types=tuple(self.token_types),
            max_token_age=self.max_token_age,
            scope_claims=tuple(self.scope_claims),
        )

    def static_keys(self, algorithms: frozenset[str]) -> KeySet | None:
        """The configured static keys, or ``None`` when keys are fetched."""
        keys: list[VerificationKey] = []
        for key in self.keys:
            if isinstance(key, VerificationKey):
                keys.append(key)
            elif isinstance(key, Mapping):
                try:
                    keys.append(parse_jwk(key, allow_symmetric=True))
                except ValueError as exc:
                    raise ConfigurationError(f"invalid key: {exc}") from None
            else:
                keys.append(VerificationKey.from_public_key(key, kid=None))
        if self.jwks is not None:
            try:
                parsed, skipped = parse_jwks(dict(self.jwks), allow_symmetric=True)
            except ValueError as exc:
                raise ConfigurationError(f"invalid jwks: {exc}") from None
            if skipped:
                raise ConfigurationError(f"unusable keys in jwks: {'; '.join(skipped)}")
            keys.extend(k for group in parsed.by_kid.values() for k in group)
            keys.extend(parsed.without_kid)
        for kid, secret in (self.hmac_keys or {}).items():
            hmac_algs = sorted(algorithms & HMAC_ALGORITHMS)
            if not hmac_algs:
                raise ConfigurationError("hmac_keys given but algorithms= allows none of HS256, HS384, HS512")
            keys.append(VerificationKey.from_secret(secret, kid=kid, algorithms=hmac_algs))
        if not keys:
            return None
        return KeySet.of(keys)


class IssuerRuntime:
    """One configured issuer, ready to verify: policy, keys, metadata."""

    def __init__(self, config: JWTIssuer, metadata: MetadataSource | None) -> None:
        self.config = config
        self.policy = config.policy()
        self.metadata = metadata
        self.static = config.static_keys(self.policy.algorithms)
        self.jwks: JWKSSource | None = None
        if self.static is None:
            if config.jwks_uri is not None:
                check_url(config.jwks_uri, require_https=config.fetch.require_https, what="jwks_uri")
            self.jwks = JWKSSource(config.fetch, jwks_uri=config.jwks_uri, metadata=metadata)
        #: Fingerprints of the static keys (empty when keys are fetched).
        self.current_thumbprints = self.static.thumbprints() if self.static is not None else frozenset()
        #: Whose ``current_thumbprints`` say which keys are trusted now.
        self.key_owner: JWKSSource | IssuerRuntime = self.jwks if self.jwks is not None else self
        self._headers: dict[str, tuple[str, str | None]] = {}

    def keys_at_hand(self, jws: UnverifiedJWS, now: float) -> KeySet | None:
        """The keys to verify ``jws`` with, if no fetch is needed; else ``None`` (use :meth:`verify_flow`)."""
        jwks = self.jwks
        if jwks is None:
            return self.static
        kid = jws.header.get("kid")
        return jwks.keys_at_hand(kid, now) if kid is None or type(kid) is str else None

    def verify_now(self, jws: UnverifiedJWS, keys: KeySet, now: float) -> tuple[TokenClaims, str]:
        """Verify ``jws`` with ``keys``; return its claims and the key's thumbprint."""
        # verify_jws() and the remembered header check, inlined: this runs for
        # every new token whose keys are at hand. The same checks in the same
        # order: header, claims, signature.
        checked = self._headers.get(jws.encoded_header) or self._checked_header(jws)
        policy = self.policy
        payload = jws.payload
        exp, nbf, iat = check_claims(payload, policy, now)
        thumbprint = check_signature(jws, keys, checked[0], checked[1])
        owned = payload if type(payload) is dict else dict(payload)
        return verified_jwt_claims(owned, policy.scope_claims, exp, nbf, iat), thumbprint

    def _checked_header(self, jws: UnverifiedJWS) -> tuple[str, str | None]:
        # The header check depends on the header and this issuer's policy
        # only, and an issuer's tokens share a few headers: remembered by the
        # encoded header, which identifies it exactly. Refusals are not kept.
        encoded = jws.encoded_header
        checked = self._headers.get(encoded)
        if checked is None:
            checked = check_header(jws.header, self.policy)
            if encoded and len(encoded) <= _MAX_REMEMBERED_HEADER:
                remember(self._headers, encoded, checked, _REMEMBERED_HEADERS)
        return checked

    def verify_flow(self, jws: UnverifiedJWS, now: float) -> Flow[tuple[TokenClaims, str]]:
        """Verify ``jws`` with this issuer's keys, fetching them if needed.

        Every check that needs no key runs first, so a token that cannot pass
        causes no fetch.
        """
        checked = self._checked_header(jws)
        check_claims(jws.payload, self.policy, now)
        keys = self.static
        if self.jwks is not None:
            keys = yield from self.jwks.keys_flow(checked[1], now)
        assert keys is not None
        return verify_jws(jws, keys, self.policy, now, checked=checked)


_MAX_REMEMBERED_HEADER = 512
_REMEMBERED_HEADERS = HEADER_CHECKS_LIMIT
