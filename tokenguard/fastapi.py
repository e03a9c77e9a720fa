"""FastAPI integration: scope dependencies, OpenAPI security scheme, error handler.

::

    guard = TokenGuard.from_issuer(...)
    app = FastAPI()
    tokenguard.fastapi.setup(app, guard)            # error rendering (+ optional middleware)

    @app.get("/books")
    async def books(claims: TokenClaims = Security(guard.requires("books:read"))): ...

``guard.requires(...)`` is a dependency that returns the verified
:class:`~tokenguard.TokenClaims`; it declares an HTTP Bearer security scheme,
so ``/docs`` offers an "Authorize" button where a token can be pasted.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI
from fastapi.security import HTTPBearer
from starlette.requests import Request
from starlette.responses import Response

from .errors import TokenError
from .guard import TokenGuard
from .starlette import DEFAULT_PUBLIC_PATHS, TokenGuardMiddleware, error_response

if TYPE_CHECKING:
    from .requirement import Requirement

__all__ = ["bearer_scheme", "dependency_signature", "setup"]

#: The OpenAPI security scheme every requirement declares. ``auto_error=False``:
#: tokenguard, not FastAPI, decides and renders the RFC 6750 answer.
bearer_scheme = HTTPBearer(
    scheme_name="BearerToken",
    description="An OAuth 2.0 access token (RFC 6750). Paste the token without the 'Bearer ' prefix.",
    auto_error=False,
)


def dependency_signature(requirement: Requirement) -> inspect.Signature:
    """The signature FastAPI sees for a :class:`~tokenguard.requirement.Requirement`."""
    return inspect.Signature(
        [
            inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
            inspect.Parameter(
                "credentials",
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=Depends(bearer_scheme),
                annotation=Any,
            ),
        ],
        return_annotation=Any,
    )


def setup(
    app: FastAPI,
    guard: TokenGuard,
    *,
    middleware: bool = False,
    protect: bool = True,
    public_paths: tuple[str, ...] = DEFAULT_PUBLIC_PATHS,
    **middleware_options: Any,
) -> None:
    """Register the :class:`TokenError` handler and, optionally, the middleware.

    Args:
        middleware: also add :class:`TokenGuardMiddleware`, which verifies
            every request (``protect=True``) and sets ``Vary``/``Cache-Control``
            on authenticated responses. Without it, only routes that depend on
            ``guard.requires(...)`` are checked.
    """

    async def handle(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, TokenError)
        return error_response(guard, exc)

    app.add_exception_handler(TokenError, handle)
    if middleware:
        app.add_middleware(
            TokenGuardMiddleware,
            guard=guard,
            protect=protect,
            public_paths=public_paths,
            **middleware_options,
        )
