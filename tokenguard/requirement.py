"""A route's scope requirement bound to a guard: a FastAPI dependency.

FastAPI inspects a dependency's signature to know what to inject. The
signature is built on first inspection (:attr:`Requirement.__signature__`),
so this module imports no framework until FastAPI actually looks.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from .claims import TokenClaims
from .errors import TokenError
from .scopes import ScopeRequirement

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection

    from .guard import TokenGuard
    from .route_policy import RoutePolicy

__all__ = ["Requirement"]

#: Where the ASGI middleware leaves the verified claims (``None``: no token).
SCOPE_KEY = "tokenguard"


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
    )
    client = connection.client
    claims = await guard.verify(token, client=client.host if client is not None else None)
    scope[SCOPE_KEY] = claims
    return claims


class Requirement:
    """Scopes a route needs, checked against the request's token.

    Created by :meth:`TokenGuard.requires`. As a FastAPI dependency it
    returns the :class:`TokenClaims` and adds an HTTP Bearer security scheme
    to the OpenAPI document.
    """

    def __init__(self, guard: TokenGuard, scopes: ScopeRequirement, policy: RoutePolicy | None = None) -> None:
        self.guard = guard
        self.scopes = scopes
        #: Step-up and per-route DPoP conditions (route_policy.py), if any.
        self.policy = policy

    def __repr__(self) -> str:
        mode = "any_of" if self.scopes.any_of else "all_of"
        return f"Requirement({mode}={list(self.scopes.scopes)!r})"

    async def check(self, connection: HTTPConnection) -> TokenClaims:
        """Verify the connection's token and this requirement's scopes."""
        claims = await claims_for_connection(self.guard, connection)
        from .request_auth import VERDICT_KEY

        verdict = connection.scope.get(VERDICT_KEY)
        try:
            self.scopes.check(claims.scopes)
            if self.policy is not None:
                self.policy.check(claims, verdict, self.guard.clock())
        except TokenError as error:
            if verdict is not None and error.auth_scheme == "Bearer":
                error.auth_scheme = verdict.scheme  # RFC 9449 §7.2: answer on the scheme used
            raise
        return claims

    async def __call__(self, request: HTTPConnection, credentials: Any = None) -> TokenClaims:
        return await self.check(request)

    @property
    def __signature__(self) -> inspect.Signature:
        from .fastapi import dependency_signature

        return dependency_signature(self)
