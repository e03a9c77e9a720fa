"""What :meth:`TokenGuard.from_issuer` and :meth:`TokenGuard.from_keys` make of their keywords.

The two builders take flat keywords; these functions turn them into the
:class:`~tokenguard.JWTIssuer` (and :class:`~tokenguard.Introspection`) a
:class:`~tokenguard.TokenGuard` is built from, so the facade keeps only the
signatures and their documentation. No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._config import string_tuple
from .errors import ConfigurationError
from .introspection import ClientAuthMethod, Introspection
from .issuer import JWTIssuer
from .jwt import algorithms_of
from .keys import HMAC_ALGORITHMS, VerificationKey
from .scopes import DEFAULT_SCOPE_CLAIMS
from .sources import FetchSettings

__all__ = ["discovery_configs", "static_keys_config"]


def discovery_configs(
    issuer: str,
    *,
    audience: str | Sequence[str] | None,
    client_id: str | None,
    client_secret: str | None,
    auth_method: ClientAuthMethod,
    introspection_endpoint: str | None,
    jwks_uri: str | None,
    discovery_url: str | None,
    algorithms: Iterable[str] | None,
    token_types: Sequence[str | None],
    required_claims: Sequence[str],
    scope_claims: Sequence[str] | None,
    leeway: float | None,
    introspection_cache_ttl: float,
    check_revocation: bool,
    fetch: FetchSettings | None,
    signed_introspection: bool,
) -> tuple[JWTIssuer, Introspection | None]:
    """The issuer found by discovery and, with ``client_id``, its introspection settings.

    Raises:
        ConfigurationError: an invalid option (named as the user wrote it).
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
    return jwt_issuer, introspection


def static_keys_config(
    options: dict[str, Any],
    *,
    issuer: str,
    audience: str | Sequence[str] | None,
    jwks: Mapping[str, Any] | None,
    keys: Sequence[Any],
    hmac_keys: Mapping[str | None, str | bytes] | None,
    algorithms: Iterable[str] | None,
    allow_short_hmac_secret: bool,
) -> JWTIssuer:
    """The issuer with static keys; issuer options are taken out of ``options``
    (what remains is for the guard).

    Raises:
        ConfigurationError: no keys at all, or an invalid option.
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
    return config
