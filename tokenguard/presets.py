"""Ready configurations for the identity providers our users run.

Each preset fills in the provider's documented endpoints and claim
conventions and returns an ordinary :class:`~tokenguard.TokenGuard`; every
keyword that :meth:`TokenGuard.from_issuer` (or ``from_keys``) accepts can be
passed through to adjust it. Nothing is fetched until the first token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .guard import TokenGuard
from .introspection import ClientAuthMethod

__all__ = ["DIAN_ISSUER", "dian", "ibm_liberty", "identity_server", "logto"]

#: The ``iss`` of tokens issued by the DIAN identity service (Colombia).
DIAN_ISSUER = "https://muisca.dian.gov.co"


def logto(
    endpoint: str,
    *,
    resource: str | Sequence[str] | None,
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

    Args:
        endpoint: the tenant's base URL, with or without ``/oidc``.
        resource: the API resource indicator(s) accepted as audience.
    """
    base = endpoint.rstrip("/")
    issuer = base if base.endswith("/oidc") else base + "/oidc"
    options.setdefault("token_types", ("at+jwt",))
    return TokenGuard.from_issuer(
        issuer,
        audience=resource,
        jwks_uri=issuer + "/jwks",
        client_id=client_id,
        client_secret=client_secret,
        auth_method=auth_method,
        introspection_endpoint=issuer + "/token/introspection" if client_id else None,
        **options,
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
    resource server's ``client_id``/``client_secret``, sent with HTTP Basic)
    and JWTs when the provider is configured so; both are accepted. Liberty
    JWTs carry no ``aud`` unless the provider lists audiences: list this API
    there and pass it as ``audience``. ``audience=None`` (logged as a WARNING)
    would accept Liberty's ID tokens, signed by the same keys, as access tokens.
    """
    issuer = f"{host.rstrip('/')}/oidc/endpoint/{provider}"
    return TokenGuard.from_issuer(
        issuer,
        audience=audience,
        jwks_uri=issuer + "/jwk",
        client_id=client_id,
        client_secret=client_secret,
        auth_method="client_secret_basic",
        introspection_endpoint=issuer + "/introspect" if client_id else None,
        **options,
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
    """
    authority = authority.rstrip("/")
    return TokenGuard.from_issuer(
        authority,
        audience=api_name,
        client_id=api_name if api_secret is not None else None,
        client_secret=api_secret,
        auth_method="client_secret_basic",
        introspection_endpoint=authority + "/connect/introspect" if api_secret is not None else None,
        **options,
    )


def dian(client_id: str, secret: str | bytes, *, issuer: str = DIAN_ISSUER, **options: Any) -> TokenGuard:
    """The DIAN identity service's ``idToken``: an HS256 JWT verified with the shared secret.

    ``aud`` is a JSON array holding the client id; ``sub`` a composite id. The
    opaque ``accessToken`` has no documented introspection; protect routes
    that receive it with a custom verifier (see ``docs/providers.md``).
    """
    options.setdefault("leeway", 60)
    return TokenGuard.from_keys(
        issuer=issuer, audience=client_id, hmac_keys={None: secret}, algorithms=["HS256"], **options
    )
