"""FastAPI integration: scope dependencies, OpenAPI security, error handler.

::

    guard = TokenGuard.from_issuer(...)
    app = FastAPI()
    tokenguard.fastapi.setup(app, guard)            # error rendering (+ optional middleware)

    @app.get("/books")
    async def books(claims: TokenClaims = Security(guard.requires("books:read"))): ...

``guard.requires(...)`` is a dependency that returns the verified
:class:`~tokenguard.TokenClaims`. In the OpenAPI document each operation that
uses it lists the HTTP Bearer scheme with the scopes it needs, and
:func:`setup` documents the 400/401/403/503 answers with their error body.
With ``setup(app, guard, oauth2=OAuth2Settings.from_metadata(...))``, ``/docs``
also offers the issuer's OAuth 2.0 flows (authorization code with PKCE, client
credentials), so "Authorize" obtains a real token instead of a pasted one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

from .errors import ConfigurationError, TokenError
from .guard import TokenGuard
from .options import resolve_options
from .requirement import dependency_signature, model_dependency_signature, openapi_bearer_scheme
from .starlette import TokenGuardMiddleware, error_response

__all__ = [
    "OAuth2Settings",
    "bearer_scheme",
    "dependency_signature",
    "document_security",
    "model_dependency_signature",
    "setup",
]

#: Name of the OAuth 2.0 scheme :func:`setup` adds to the OpenAPI document.
OAUTH2_SCHEME_NAME = "OAuth2"


#: The OpenAPI security scheme every requirement declares (defined beside
#: :class:`~tokenguard.requirement.Requirement`, which the core builds).
bearer_scheme = openapi_bearer_scheme()


@dataclass(frozen=True)
class OAuth2Settings:
    """The issuer's OAuth 2.0 flows, for the OpenAPI document and Swagger UI.

    Build it from the issuer's metadata (:meth:`from_metadata`,
    :meth:`from_issuer`) so the URLs are the issuer's own. Swagger UI's
    "Authorize" then runs the authorization code flow with PKCE (RFC 7636),
    or client credentials, and sends the token it obtained.

    Args:
        token_url: the token endpoint.
        authorization_url: the authorization endpoint; ``None`` leaves out
            the authorization code flow.
        scopes: scope names and descriptions offered in the dialog.
        client_id: prefilled in Swagger UI (a public client registered for
            the docs; never put a client secret here, the page is public).
        client_credentials: also offer the client credentials flow.
        refresh_url: the endpoint to refresh tokens, if different.
    """

    token_url: str
    authorization_url: str | None = None
    scopes: Mapping[str, str] = field(default_factory=dict)
    client_id: str | None = None
    client_credentials: bool = True
    refresh_url: str | None = None

    def __post_init__(self) -> None:
        for name in ("token_url", "authorization_url", "refresh_url"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.startswith(("https://", "http://"))):
                raise ConfigurationError(f"{name} must be an absolute http(s) URL, got {value!r}")
        if isinstance(self.scopes, str) or not isinstance(self.scopes, Mapping):
            raise ConfigurationError("scopes must be a mapping of scope name to description")
        if self.authorization_url is None and not self.client_credentials:
            raise ConfigurationError("OAuth2Settings offers no flow: give authorization_url or client_credentials=True")

    @classmethod
    def from_metadata(
        cls,
        metadata: Mapping[str, Any],
        *,
        scopes: Mapping[str, str] | Iterable[str] | None = None,
        client_id: str | None = None,
    ) -> OAuth2Settings:
        """Settings from an OIDC discovery / RFC 8414 metadata document.

        The authorization code flow is offered when the metadata has an
        ``authorization_endpoint`` and lists ``S256`` (or nothing) under
        ``code_challenge_methods_supported``; client credentials when
        ``grant_types_supported`` names it (or is absent).

        Args:
            metadata: the parsed document.
            scopes: the scopes to offer, as names or name → description;
                default ``scopes_supported`` from the metadata.
            client_id: the public client for Swagger UI.

        Raises:
            ConfigurationError: the document has no ``token_endpoint``.
        """
        token_url = metadata.get("token_endpoint")
        if not isinstance(token_url, str):
            raise ConfigurationError("the issuer metadata has no token_endpoint")
        grants = metadata.get("grant_types_supported")
        grants = grants if isinstance(grants, list) else ["authorization_code", "client_credentials"]
        methods = metadata.get("code_challenge_methods_supported")
        pkce = not isinstance(methods, list) or "S256" in methods
        authorization = metadata.get("authorization_endpoint")
        if not (isinstance(authorization, str) and "authorization_code" in grants and pkce):
            authorization = None
        if scopes is None:
            supported = metadata.get("scopes_supported")
            scopes = [s for s in supported if isinstance(s, str)] if isinstance(supported, list) else []
        if isinstance(scopes, str):
            raise ConfigurationError("scopes must be a list of names or a mapping, not a string")
        offered = dict(scopes) if isinstance(scopes, Mapping) else {name: name for name in scopes}
        return cls(
            token_url=token_url,
            authorization_url=authorization,
            scopes=offered,
            client_id=client_id,
            client_credentials="client_credentials" in grants,
        )

    @classmethod
    def from_issuer(
        cls,
        issuer: str,
        *,
        scopes: Mapping[str, str] | Iterable[str] | None = None,
        client_id: str | None = None,
        timeout: float = 5.0,
    ) -> OAuth2Settings:
        """Fetch the issuer's OIDC discovery document (sync, at start-up) and build the settings.

        Raises:
            ConfigurationError: the document cannot be fetched or names another issuer.
        """
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            response = httpx.get(url, timeout=timeout, follow_redirects=False)
            response.raise_for_status()
            metadata = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ConfigurationError(f"cannot read the issuer metadata at {url}: {type(exc).__name__}") from exc
        # OIDC Discovery §4.3: the document must name the issuer it was fetched for.
        if not isinstance(metadata, dict) or metadata.get("issuer") != issuer:
            raise ConfigurationError(f"the metadata at {url} does not name the issuer {issuer!r}")
        return cls.from_metadata(metadata, scopes=scopes, client_id=client_id)

    def security_scheme(self) -> dict[str, Any]:
        """The OpenAPI ``oauth2`` security scheme object."""
        flows: dict[str, Any] = {}
        scopes = dict(self.scopes)
        if self.authorization_url is not None:
            flows["authorizationCode"] = {
                "authorizationUrl": self.authorization_url,
                "tokenUrl": self.token_url,
                "scopes": scopes,
            }
        if self.client_credentials:
            flows["clientCredentials"] = {"tokenUrl": self.token_url, "scopes": scopes}
        if self.refresh_url is not None:
            for flow in flows.values():
                flow["refreshUrl"] = self.refresh_url
        return {"type": "oauth2", "flows": flows}

    def swagger_ui_init_oauth(self) -> dict[str, Any]:
        """Swagger UI's ``initOAuth`` settings: PKCE on, the public client prefilled."""
        settings: dict[str, Any] = {"usePkceWithAuthorizationCodeGrant": True}
        if self.client_id is not None:
            settings["clientId"] = self.client_id
        return settings


_ERROR_SCHEMA = {
    "title": "TokenError",
    "type": "object",
    "description": "RFC 6750 §3 error body; the same code is in the WWW-Authenticate challenge.",
    "properties": {
        "error": {"type": "string", "examples": ["invalid_token"]},
        "error_description": {"type": "string"},
    },
    "required": ["error"],
}
_CHALLENGE_HEADER = {"WWW-Authenticate": {"description": "RFC 6750 §3 Bearer challenge", "schema": {"type": "string"}}}


def _error_response(description: str, headers: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "description": description,
        "headers": dict(headers),
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TokenError"}}},
    }


_RESPONSES: dict[str, dict[str, Any]] = {
    "400": _error_response("invalid_request: malformed Authorization header or more than one token", {}),
    "401": _error_response("No token, or invalid_token (expired, bad signature, wrong audience…)", _CHALLENGE_HEADER),
    "403": _error_response("insufficient_scope: the token lacks a scope the operation needs", _CHALLENGE_HEADER),
    "503": _error_response(
        "The authorization server cannot be reached; retry later",
        {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
    ),
}


def document_security(schema: dict[str, Any], oauth2: OAuth2Settings | None = None) -> dict[str, Any]:
    """Add tokenguard's error answers (and the OAuth 2.0 scheme) to an OpenAPI document.

    Every operation that requires the bearer scheme gains 400, 401 and 503
    responses, and 403 when it requires scopes, each with the RFC 6750 error
    body; responses the application declared itself are kept. With
    ``oauth2``, the scheme is added and each operation accepts it as an
    alternative with the same scopes. Edits ``schema`` in place and returns it.
    """
    name = bearer_scheme.scheme_name
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["TokenError"] = _ERROR_SCHEMA
    if oauth2 is not None:
        components.setdefault("securitySchemes", {})[OAUTH2_SCHEME_NAME] = oauth2.security_scheme()
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            requirements = operation.get("security") or []
            bearer = [r for r in requirements if name in r]
            if not bearer:
                continue
            responses = operation.setdefault("responses", {})
            statuses = ("400", "401", "403", "503") if any(r[name] for r in bearer) else ("400", "401", "503")
            for status in statuses:
                if status not in responses:
                    responses[status] = copy.deepcopy(_RESPONSES[status])
            if oauth2 is not None:
                # OpenAPI 3.1 §4.8.10: the list holds alternatives; either scheme will do.
                for requirement in bearer:
                    alternative = {OAUTH2_SCHEME_NAME: list(requirement[name])}
                    if alternative not in requirements:
                        requirements.append(alternative)
                operation["security"] = requirements
    return schema


def setup(
    app: FastAPI,
    guard: TokenGuard,
    *,
    middleware: bool = False,
    protect: bool | None = None,
    public_paths: Sequence[str] | None = None,
    oauth2: OAuth2Settings | None = None,
    **middleware_options: Any,
) -> None:
    """Register the :class:`TokenError` handler, the OpenAPI additions and, optionally, the middleware.

    Args:
        middleware: also add :class:`TokenGuardMiddleware`, which verifies
            every request (``protect=True``) and sets ``Vary``/``Cache-Control``
            on authenticated responses. Without it, only routes that depend on
            ``guard.requires(...)`` are checked. The middleware answers before
            any dependency runs, so ``app.dependency_overrides`` cannot bypass
            it: tests of such an app send real tokens (see the pytest plugin).
        protect / public_paths / middleware_options: the middleware's
            options (:class:`~tokenguard.options.AdapterOptions` fields, or
            ``options=`` with one), defaults as in every adapter (protect
            everything, nothing public).
        oauth2: the issuer's flows for ``/docs`` (:class:`OAuth2Settings`).

    Raises:
        ConfigurationError: invalid middleware options, checked now rather
            than when the first request builds the middleware stack.
    """

    async def handle(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TokenError)
        return error_response(guard, exc)

    app.add_exception_handler(TokenError, handle)
    _wrap_openapi(app, oauth2)
    if oauth2 is not None:
        app.swagger_ui_init_oauth = {**oauth2.swagger_ui_init_oauth(), **(app.swagger_ui_init_oauth or {})}
    if middleware:
        # Only the keywords given: protect/public_paths defaults must not clash
        # with options=AdapterOptions(...). Resolved here so a bad value fails
        # at setup(), not when the first request builds the stack.
        given = {"protect": protect, "public_paths": public_paths, **middleware_options}
        options = resolve_options(given.pop("options", None), given)
        app.add_middleware(TokenGuardMiddleware, guard=guard, options=options)


def _wrap_openapi(app: FastAPI, oauth2: OAuth2Settings | None) -> None:
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        app.openapi_schema = document_security(generate(), oauth2)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
