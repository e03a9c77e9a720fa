"""A route's scope requirement bound to a guard: a FastAPI dependency.

FastAPI inspects a dependency's signature to know what to inject. The
signature is built on first inspection (:attr:`Requirement.__signature__`,
:func:`dependency_signature`), so this module imports no framework until
FastAPI actually looks, and no tokenguard adapter ever: ``guard.requires()``
returns one without the core reaching into ``tokenguard.fastapi``, which
re-exports the FastAPI pieces defined here.

Two requirements made with the same arguments on the same guard compare equal
and hash alike, so ``app.dependency_overrides[guard.requires("read")]`` finds
the dependency a route declared with another ``guard.requires("read")`` call.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .claims import TokenClaims
from .errors import TokenError
from .scopes import ScopeRequirement

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

    from ._guardlike import GuardLike as TokenGuard
    from .route_policy import RoutePolicy

__all__ = [
    "ModelRequirement",
    "Requirement",
    "dependency_signature",
    "model_dependency_signature",
    "openapi_bearer_scheme",
]

#: Where the ASGI middleware leaves the verified claims (``None``: no token).
SCOPE_KEY = "tokenguard"

M = TypeVar("M")

#: The OpenAPI HTTP Bearer scheme, built on first use (it is a FastAPI object).
_bearer_scheme: Any = None


def openapi_bearer_scheme() -> Any:
    """The HTTP Bearer scheme every requirement declares, for OpenAPI only.

    tokenguard, not FastAPI, finds the token and renders the RFC 6750 answer,
    so the scheme reads nothing. It takes an ``HTTPConnection`` (not a
    ``Request``) so that it resolves on WebSocket routes too. One object per
    process, built on first use: importing it imports FastAPI.
    """
    global _bearer_scheme
    if _bearer_scheme is None:
        from fastapi.security import HTTPBearer
        from starlette.requests import HTTPConnection as Connection

        class _BearerScheme(HTTPBearer):
            async def __call__(self, connection: Connection) -> None:
                return None

        # Real objects, not the strings ``from __future__ import annotations``
        # leaves: FastAPI resolves string annotations in this module's globals.
        _BearerScheme.__call__.__annotations__ = {"connection": Connection, "return": None}
        _bearer_scheme = _BearerScheme(
            scheme_name="BearerToken",
            description="An OAuth 2.0 access token (RFC 6750). Paste the token without the 'Bearer ' prefix.",
            auto_error=False,
        )
    return _bearer_scheme


def dependency_signature(requirement: Requirement) -> inspect.Signature:
    """The signature FastAPI sees for a :class:`Requirement`.

    ``credentials`` declares the bearer scheme with the requirement's scopes
    (so OpenAPI lists them); ``security_scopes`` receives the scopes declared
    around the dependency with ``Security(..., scopes=[...])``, which the
    requirement enforces too.
    """
    from fastapi import Security
    from fastapi.security import SecurityScopes
    from starlette.requests import HTTPConnection as Connection

    return inspect.Signature(
        [
            inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Connection),
            inspect.Parameter("security_scopes", inspect.Parameter.KEYWORD_ONLY, annotation=SecurityScopes),
            inspect.Parameter(
                "credentials",
                inspect.Parameter.KEYWORD_ONLY,
                default=Security(openapi_bearer_scheme(), scopes=list(requirement.scopes.scopes)),
                annotation=Any,
            ),
        ],
        return_annotation=Any,
    )


def model_dependency_signature(requirement: Requirement) -> inspect.Signature:
    """The signature FastAPI sees for ``requirement.model(...)``: the claims come from ``requirement``."""
    from fastapi import Security
    from starlette.requests import HTTPConnection as Connection

    return inspect.Signature(
        [
            inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Connection),
            inspect.Parameter("claims", inspect.Parameter.KEYWORD_ONLY, default=Security(requirement), annotation=Any),
        ],
        return_annotation=Any,
    )


async def claims_for_connection(guard: TokenGuard, connection: HTTPConnection) -> TokenClaims:
    """The verified claims of a request: from the middleware, or verified now.

    Raises:
        TokenError: missing, malformed or invalid credentials.
    """
    scope = connection.scope
    if SCOPE_KEY in scope and scope[SCOPE_KEY] is not None:
        claims: TokenClaims = scope[SCOPE_KEY]
        return claims
    from .sender_config import is_sender_constrained

    if is_sender_constrained(guard):
        # DPoP / mTLS: the token is judged with its request (request_auth.py).
        from .request_auth import VERDICT_KEY, asgi_request_context, verify_request

        verdict = await verify_request(guard, asgi_request_context(scope, guard.trusted_proxies))
        scope[VERDICT_KEY] = verdict
        scope[SCOPE_KEY] = verdict.claims
        return verdict.claims
    token = guard.extract(
        connection.headers.getlist("authorization"),
        connection.query_params.getlist("access_token"),
        await _form_tokens(guard, connection),
    )
    client = connection.client
    claims = await guard.verify(token, client=client.host if client is not None else None)
    scope[SCOPE_KEY] = claims
    return claims


#: As every adapter: only an urlencoded body declaring at most 64 KiB is searched for a token.
_MAX_FORM_BYTES = 64 * 1024


async def _form_tokens(guard: TokenGuard, connection: HTTPConnection) -> list[str]:
    """``access_token`` values of the request's urlencoded body, when the guard accepts them.

    As the ASGI middleware and the WSGI, Flask and Django adapters do (RFC 6750
    §2.2): without it a route protected only by a dependency or decorator
    answered 401 to a form token every other adapter accepts. The body stays
    readable by the endpoint: ``Request.body()`` is cached, and a form that
    FastAPI parsed already is reused.
    """
    scope = connection.scope
    if not guard.allow_form_token or scope.get("type") != "http" or scope.get("method") in ("GET", "HEAD"):
        return []
    content_type = connection.headers.get("content-type", "").split(";")[0].strip().lower()
    length = connection.headers.get("content-length", "")
    if content_type != "application/x-www-form-urlencoded" or not length.isdigit() or int(length) > _MAX_FORM_BYTES:
        return []
    from starlette.requests import Request

    from .bearer import parameter_tokens

    if not isinstance(connection, Request):
        return []
    try:
        return parameter_tokens(await connection.body())
    except RuntimeError:
        # The stream was consumed by a form FastAPI parsed for the endpoint: that form is cached.
        return [value for value in (await connection.form()).getlist("access_token") if isinstance(value, str)]


class Requirement:
    """Scopes a route needs, checked against the request's token.

    Created by :meth:`TokenGuard.requires`. As a FastAPI dependency it
    returns the :class:`TokenClaims`, declares the HTTP Bearer security scheme
    with its scopes in the OpenAPI document, and also enforces the scopes
    FastAPI collects through ``Security(..., scopes=[...])`` at any level of
    nested dependencies (:class:`fastapi.security.SecurityScopes`): a scope
    that OpenAPI shows as required is a scope the token must carry.

    It works on HTTP and WebSocket routes alike; a refused WebSocket is closed
    with code 1008 (policy violation, RFC 6455 §7.4.1) before it is accepted.

    Equal arguments on the same guard give equal, equally hashed requirements,
    so FastAPI's ``dependency_overrides`` can replace one in tests.
    """

    __slots__ = ("guard", "policy", "scopes")

    def __init__(self, guard: TokenGuard, scopes: ScopeRequirement, policy: RoutePolicy | None = None) -> None:
        self.guard = guard
        self.scopes = scopes
        #: Step-up and per-route DPoP conditions (route_policy.py), if any.
        self.policy = policy

    def __repr__(self) -> str:
        mode = "any_of" if self.scopes.any_of else "all_of"
        return f"Requirement({mode}={list(self.scopes.scopes)!r})"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Requirement)
        return self.guard is other.guard and self.scopes == other.scopes and self.policy == other.policy

    def __hash__(self) -> int:
        return hash((type(self), id(self.guard), self.scopes, self.policy))

    async def check(self, connection: HTTPConnection, declared: Sequence[str] = ()) -> TokenClaims:
        """Verify the connection's token, this requirement's scopes and ``declared``.

        Args:
            connection: the request or WebSocket.
            declared: scopes declared around the dependency (FastAPI's
                ``SecurityScopes``); every one of them is required.

        Raises:
            TokenError: missing or invalid token, or a scope is missing.
        """
        claims = await claims_for_connection(self.guard, connection)
        from .request_auth import VERDICT_KEY

        verdict = connection.scope.get(VERDICT_KEY)
        try:
            if not declared:
                self.scopes.check(claims.scopes)
            elif self.scopes.any_of:
                self.scopes.check(claims.scopes)
                ScopeRequirement(tuple(declared)).check(claims.scopes)
            else:
                # One check over both lists, so the 403 names every scope the
                # route needs (RFC 6750 §3.1 scope attribute).
                ScopeRequirement(tuple(dict.fromkeys((*self.scopes.scopes, *declared)))).check(claims.scopes)
            if self.policy is not None:
                self.policy.check(claims, verdict, self.guard.clock())
        except TokenError as error:
            if verdict is not None and error.auth_scheme == "Bearer":
                error.auth_scheme = verdict.scheme  # RFC 9449 §7.2: answer on the scheme used
            raise
        return claims

    async def __call__(
        self, request: HTTPConnection, credentials: Any = None, security_scopes: Any = None
    ) -> TokenClaims:
        declared: Sequence[str] = getattr(security_scopes, "scopes", ()) or ()
        if request.scope.get("type") != "websocket":
            return await self.check(request, declared)
        try:
            return await self.check(request, declared)
        except TokenError as error:
            from starlette.exceptions import WebSocketException

            # RFC 6455 §7.4.1: 1008 "policy violation"; closed before accept,
            # so the server answers the handshake with 403.
            raise WebSocketException(code=1008, reason=error.error_code or "unauthorized") from error

    def model(self, model: type[M]) -> ModelRequirement[M]:
        """The same requirement, returning the claims validated as ``model``.

        ``model`` is a pydantic model or a dataclass; see
        :func:`tokenguard.typed_claims.claims_as`. Use it as
        ``claims: MyClaims = Security(guard.requires("read").model(MyClaims))``.
        """
        return ModelRequirement(self, model)

    @property
    def __signature__(self) -> inspect.Signature:
        return dependency_signature(self)


class ModelRequirement(Generic[M]):
    """A :class:`Requirement` whose dependency value is a typed claims model.

    The model is validated once per verified token and cached with it
    (:func:`tokenguard.typed_claims.claims_as`); claims that do not fit the
    model are refused with 401 ``invalid_token``.
    """

    __slots__ = ("model_type", "requirement")

    def __init__(self, requirement: Requirement, model: type[M]) -> None:
        from .typed_claims import check_model

        check_model(model)
        self.requirement = requirement
        self.model_type = model

    def __repr__(self) -> str:
        return f"{self.requirement!r}.model({self.model_type.__qualname__})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelRequirement):
            return NotImplemented
        return self.requirement == other.requirement and self.model_type is other.model_type

    def __hash__(self) -> int:
        return hash((ModelRequirement, self.requirement, id(self.model_type)))

    async def __call__(self, request: HTTPConnection, claims: TokenClaims) -> M:
        from .typed_claims import claims_as

        if request.scope.get("type") != "websocket":
            return claims_as(claims, self.model_type)
        try:
            return claims_as(claims, self.model_type)
        except TokenError as error:
            from starlette.exceptions import WebSocketException

            raise WebSocketException(code=1008, reason=error.error_code or "unauthorized") from error

    @property
    def __signature__(self) -> inspect.Signature:
        # The claims come from the requirement as a sub-dependency, so an
        # override of ``guard.requires(...)`` in tests applies here too.
        return model_dependency_signature(self.requirement)
