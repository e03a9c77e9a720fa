"""Ready configurations for the identity providers our users run.

Each preset fills in the provider's documented endpoints and claim
conventions and returns an ordinary :class:`~tokenguard.TokenGuard`; every
keyword that :meth:`TokenGuard.from_issuer` (or ``from_keys``) accepts can be
passed through to adjust it, and a keyword the caller gives always wins over
the value the preset would fill in (``audience``, ``auth_method``,
``jwks_uri``, ``introspection_endpoint``, ``algorithms``…). Nothing is
fetched until the first token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import ConfigurationError
from .guard import TokenGuard
from .introspection import ClientAuthMethod

__all__ = ["DIAN_ISSUER", "dian", "ibm_liberty", "identity_server", "logto"]

#: The ``iss`` of tokens issued by the DIAN identity service (Colombia).
DIAN_ISSUER = "https://muisca.dian.gov.co"

_UNSET: Any = object()


def _merged(defaults: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """The preset's defaults overridden by the caller's keywords (the caller always wins)."""
    return {**defaults, **options}


def logto(
    endpoint: str,
    *,
    resource: str | Sequence[str] | None = _UNSET,
    client_id: str | None = None,
    client_secret: str | None = None,
    auth_method: ClientAuthMethod = "client_secret_basic",
    **options: Any,
) -> TokenGuard:
    """Logto (built on node ``oidc-provider``): ``https://<tenant>.logto.app`` or a self-hosted base URL.

    The issuer is ``{endpoint}/oidc``, keys at ``/oidc/jwks``, introspection
    at ``/oidc/token/introspection``. Logto issues JWT access tokens
    (``typ: at+jwt``) with the API resource as ``aud`` when a resource was
    requested, and opaque tokens otherwise: pass the API's machine-to-machine
    ``client_id``/``client_secret`` to accept those too.

    Opaque tokens prove less: Logto's introspection answer carries ``active``
    and ``sub`` only (no ``scope``, no ``aud``), so a route that requires a
    scope answers 403 to every opaque token. Scoped APIs need JWT access
    tokens issued for an API resource (see ``docs/providers/logto.md``).

    Args:
        endpoint: the tenant's base URL, with or without ``/oidc``.
        resource: the API resource indicator(s) accepted as audience
            (``audience=`` is accepted as a synonym; give one of them).
        client_id / client_secret: a machine-to-machine app's credentials,
            enabling introspection of opaque tokens.
        auth_method: how those credentials reach the introspection endpoint.
        options: any :meth:`TokenGuard.from_issuer` keyword; it overrides the
            preset's value.

    Raises:
        ConfigurationError: neither or both of ``resource`` and ``audience``.
    """
    base = endpoint.rstrip("/")
    issuer = base if base.endswith("/oidc") else base + "/oidc"
    if "audience" in options:
        if resource is not _UNSET:
            raise ConfigurationError("logto(): give resource or audience, not both")
        resource = options.pop("audience")
    elif resource is _UNSET:
        raise ConfigurationError("logto(): resource is required (the API resource indicator, or None knowingly)")
    defaults: dict[str, Any] = {
        "jwks_uri": issuer + "/jwks",
        "token_types": ("at+jwt",),
        "introspection_endpoint": issuer + "/token/introspection" if client_id else None,
    }
    return TokenGuard.from_issuer(
        issuer,
        audience=resource,
        client_id=client_id,
        client_secret=client_secret,
        auth_method=auth_method,
        **_merged(defaults, options),
    )


def ibm_liberty(
    host: str,
    provider: str,
    *,
    audience: str | Sequence[str] | None,
    client_id: str | None = None,
    client_secret: str | None = None,
    **options: Any,
) -> TokenGuard:
    """IBM WebSphere Liberty OpenID Connect: ``https://<host>/oidc/endpoint/<provider>``.

    Every endpoint lives under that issuer path (``token``, ``introspect``,
    ``jwk``). Liberty issues short opaque access tokens by default (pass the
    resource server's ``client_id``/``client_secret``, sent with HTTP Basic
    unless ``auth_method`` says otherwise) and JWTs when the provider is
    configured so; both are accepted. Liberty JWTs carry no ``aud`` unless the
    provider lists audiences: list this API there and pass it as ``audience``.
    ``audience=None`` (logged as a WARNING) would accept Liberty's ID tokens,
    signed by the same keys, as access tokens.

    Args:
        host: the server's origin, e.g. ``https://liberty.example.com``.
        provider: the ``<openidConnectProvider id=...>`` name.
        audience: accepted ``aud`` value(s).
        client_id / client_secret: the resource server's credentials for
            introspection of opaque tokens.
        options: any :meth:`TokenGuard.from_issuer` keyword; it overrides the
            preset's value.
    """
    issuer = f"{host.rstrip('/')}/oidc/endpoint/{provider}"
    defaults: dict[str, Any] = {
        "jwks_uri": issuer + "/jwk",
        "auth_method": "client_secret_basic",
        "introspection_endpoint": issuer + "/introspect" if client_id else None,
    }
    return TokenGuard.from_issuer(
        issuer,
        audience=audience,
        client_id=client_id,
        client_secret=client_secret,
        **_merged(defaults, options),
    )


def identity_server(
    authority: str,
    *,
    api_name: str,
    api_secret: str | None = None,
    **options: Any,
) -> TokenGuard:
    """IdentityServer-style providers (Duende, IdentityServer4, GrantID).

    JWT access tokens carry ``aud`` = the API resource name and ``scope`` as a
    JSON array; reference tokens (opaque) are checked at
    ``{authority}/connect/introspect`` with the API's own name and secret
    (``api_name``/``api_secret``), whose answers carry ``scope`` as a string.
    Both shapes normalise to the same ``claims.scopes``.

    Some deployments (GrantID's examples, IdentityServer4 with legacy
    audiences) put the authority itself in ``aud``: pass
    ``audience=[api_name, authority]`` (or any list) to accept either.
    GrantID documents the introspection credentials in the request body:
    pass ``auth_method="client_secret_post"``.

    Args:
        authority: the provider's base URL, which is also the issuer.
        api_name: the API resource name: the default audience and the
            introspection client id.
        api_secret: the API resource's secret; enables reference tokens.
        options: any :meth:`TokenGuard.from_issuer` keyword (``audience``,
            ``auth_method``, ``introspection_endpoint``…); it overrides the
            preset's value.
    """
    authority = authority.rstrip("/")
    defaults: dict[str, Any] = {
        "audience": api_name,
        "client_id": api_name if api_secret is not None else None,
        "client_secret": api_secret,
        "auth_method": "client_secret_basic",
        "introspection_endpoint": authority + "/connect/introspect" if api_secret is not None else None,
    }
    return TokenGuard.from_issuer(authority, **_merged(defaults, options))


def dian(
    client_id: str,
    secret: str | bytes,
    *,
    issuer: str = DIAN_ISSUER,
    allow_short_hmac_secret: bool = False,
    **options: Any,
) -> TokenGuard:
    """The DIAN identity service's ``idToken``: an HS256 JWT verified with the shared secret.

    ``aud`` is a JSON array holding the client id; ``sub`` a composite id. The
    opaque ``accessToken`` has no documented introspection; protect routes
    that receive it with a custom verifier (see ``docs/providers.md``).

    Args:
        client_id: your DIAN client id (the accepted audience).
        secret: the HS256 secret DIAN issued.
        issuer: the expected ``iss``.
        allow_short_hmac_secret: accept a secret shorter than the 32 bytes
            RFC 7518 §3.2 requires, with a WARNING. Only for a secret the
            provider issued and you cannot change: a short HMAC secret can be
            brute-forced from any one token.
        options: any :meth:`TokenGuard.from_keys` keyword (``audience``,
            ``algorithms``, ``leeway``…); it overrides the preset's value.

    Raises:
        ConfigurationError: the secret is shorter than 32 bytes and
            ``allow_short_hmac_secret`` is not set.
    """
    defaults: dict[str, Any] = {
        "issuer": issuer,
        "audience": client_id,
        "hmac_keys": {None: secret},
        "algorithms": ["HS256"],
        "leeway": 60,
    }
    if allow_short_hmac_secret:
        defaults["allow_short_hmac_secret"] = True
    return TokenGuard.from_keys(**_merged(defaults, options))
