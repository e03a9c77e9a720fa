"""Starlette and any ASGI application: middleware and a route decorator.

The middleware is pure ASGI (no ``BaseHTTPMiddleware``): it never buffers a
response body, so streaming, background tasks and WebSockets pass through
untouched. Per connection it:

1. skips lifespan and public paths;
2. finds the token (``Authorization`` header; query/form only if the guard
   allows), verifies it once, and stores the result where Starlette code
   looks: ``scope["tokenguard"]``, ``request.state.token``, and
   ``scope["user"]``/``scope["auth"]`` so Starlette's own ``@requires`` works;
3. answers failures itself: RFC 6750 status, challenge and JSON body for
   HTTP, close code 1008 before accept for WebSockets;
4. edits ``http.response.start`` of authenticated responses to add
   ``Vary: Authorization`` and a safe ``Cache-Control`` (see ``response.py``);
5. renders :class:`TokenError` raised by routes (decorators, dependencies)
   when the response has not started.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.authentication import AuthCredentials, BaseUser
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .claims import TokenClaims
from .errors import MissingToken, TokenError
from .guard import TokenGuard
from .request_auth import VERDICT_KEY, verify_asgi
from .requirement import SCOPE_KEY, claims_for_connection
from .response import PublicCachePolicy, ResponsePolicy
from .route_policy import RoutePolicy, check_route
from .scopes import ScopeRequirement
from .sender_config import is_sender_constrained, metadata_for_path

if TYPE_CHECKING:
    from .dpop import DPoPMode

__all__ = ["TokenGuardMiddleware", "TokenUser", "error_response", "requires"]

#: Paths left public by default: health checks and FastAPI's docs.
DEFAULT_PUBLIC_PATHS: tuple[str, ...] = (
    "/health",
    "/healthz",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",
)

#: Form bodies read for an ``access_token`` are capped (only with ``allow_form_token``).
_MAX_FORM_BYTES = 64 * 1024

F = TypeVar("F", bound=Callable[..., Awaitable[Response]])


class TokenUser(BaseUser):
    """Starlette's ``request.user`` for a verified token."""

    def __init__(self, claims: TokenClaims) -> None:
        self.claims = claims

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.claims.subject or self.claims.client_id or ""

    @property
    def identity(self) -> str:
        return self.claims.subject or ""


class _Anonymous(BaseUser):
    @property
    def is_authenticated(self) -> bool:
        return False

    @property
    def display_name(self) -> str:
        return ""


def error_response(guard: TokenGuard, error: TokenError) -> Response:
    """A Starlette response for ``error``, as the guard renders it."""
    rendered = guard.error_response(error)
    return JSONResponse(rendered.body, status_code=rendered.status_code, headers=dict(rendered.headers))


def _attach(scope: Scope, claims: TokenClaims | None) -> None:
    scope[SCOPE_KEY] = claims
    scope.setdefault("state", {})["token"] = claims
    if claims is None:
        scope["user"] = _Anonymous()
        scope["auth"] = AuthCredentials()
    else:
        scope["user"] = TokenUser(claims)
        scope["auth"] = AuthCredentials(sorted(claims.scopes))


class TokenGuardMiddleware:
    """Verify Bearer tokens for an ASGI app.

    Args:
        app: the wrapped application.
        guard: the shared :class:`TokenGuard`.
        protect: ``True`` (default) requires a valid token on every path that
            is not public; ``False`` verifies a token when one is sent and
            leaves the decision to per-route requirements.
        public_paths: exact paths that are never checked.
        public_prefixes: path prefixes that are never checked (e.g. ``"/static/"``).
        public_cache_policy: what to do with ``Cache-Control: public`` on an
            authenticated response: ``"private"`` (default, logs once per
            path), ``"keep"`` or ``"no-store"``.
    """

    def __init__(
        self,
        app: ASGIApp,
        guard: TokenGuard,
        *,
        protect: bool = True,
        public_paths: Iterable[str] = DEFAULT_PUBLIC_PATHS,
        public_prefixes: Iterable[str] = (),
        public_cache_policy: PublicCachePolicy = "private",
    ) -> None:
        self.app = app
        self.guard = guard
        self.protect = protect
        self.policy = ResponsePolicy(
            public_paths=public_paths, public_prefixes=public_prefixes, public_cache_policy=public_cache_policy
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http" and (metadata := metadata_for_path(self.guard, scope["method"], scope["path"])):
            # RFC 9728 §3: the protected-resource metadata document, public.
            await JSONResponse(metadata[1], status_code=metadata[0], headers=dict(metadata[2]))(scope, receive, send)
            return
        if self.policy.is_public(scope["path"]):
            _attach(scope, None)
            await self.app(scope, receive, send)
            return
        try:
            if is_sender_constrained(self.guard):
                # DPoP / mTLS: judged with the whole request (request_auth.py).
                verdict = await verify_asgi(self.guard, scope)
                claims = verdict.claims if verdict is not None else None
            else:
                receive, token = await self._find_token(scope, receive)
                claims = await self.guard.verify(token, client=_peer(scope)) if token is not None else None
        except TokenError as error:
            await self._reject(scope, receive, send, error)
            return
        if claims is None and self.protect:
            await self._reject(scope, receive, send, MissingToken())
            return
        _attach(scope, claims)
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        await self._call_http(scope, receive, send, claims)

    async def _find_token(self, scope: Scope, receive: Receive) -> tuple[Receive, str | None]:
        authorization = [v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"]
        query_tokens: list[str] = []
        if b"access_token" in scope.get("query_string", b""):
            query_tokens = HTTPConnection(scope).query_params.getlist("access_token")
        form_tokens: list[str] = []
        if self.guard.allow_form_token and scope["type"] == "http" and scope.get("method") not in ("GET", "HEAD"):
            receive, form_tokens = await _read_form_tokens(scope, receive)
        try:
            return receive, self.guard.extract(authorization, query_tokens, form_tokens)
        except MissingToken:
            return receive, None

    async def _call_http(self, scope: Scope, receive: Receive, send: Send, claims: TokenClaims | None) -> None:
        started = False
        path = scope["path"]

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if claims is not None:
                    message = self._secure(message, path)
                    message = _with_verdict_headers(message, scope)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except TokenError as error:
            # Raised by a route's requirement (decorator or dependency).
            if started:
                raise
            await self._reject(scope, receive, send, error)

    def _secure(self, message: Message, path: str) -> Message:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])]
        secured = self.policy.secure(headers, path)
        message = dict(message)
        message["headers"] = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in secured]
        return message

    async def _reject(self, scope: Scope, receive: Receive, send: Send, error: TokenError) -> None:
        if scope["type"] == "websocket":
            # Close before accept: the server answers the handshake with 403.
            reason = error.error_code or "unauthorized"
            await send({"type": "websocket.close", "code": 1008, "reason": reason})
            return
        await error_response(self.guard, error)(scope, receive, send)


async def _read_form_tokens(scope: Scope, receive: Receive) -> tuple[Receive, list[str]]:
    """Read an urlencoded body for ``access_token`` and replay it to the app."""
    content_type = ""
    for key, value in scope["headers"]:
        if key == b"content-type":
            content_type = value.decode("latin-1").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return receive, []
    messages: list[Message] = []
    body = b""
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        body += message.get("body", b"")
        if len(body) > _MAX_FORM_BYTES or not message.get("more_body", False):
            break
    from urllib.parse import parse_qsl

    tokens = [v for k, v in parse_qsl(body.decode("latin-1"), keep_blank_values=True) if k == "access_token"]
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay, tokens


def requires(
    guard: TokenGuard,
    *scopes: str,
    any_of: bool = False,
    acr_values: Sequence[str] = (),
    max_age: int | None = None,
    dpop: DPoPMode | None = None,
) -> Callable[[F], F]:
    """Decorate a Starlette endpoint ``async def endpoint(request)`` with a scope check.

    Works with or without :class:`TokenGuardMiddleware`: without it the token
    is verified here. Failures are answered directly with the RFC 6750 response.
    ``acr_values`` / ``max_age`` (step-up, RFC 9470) and ``dpop`` as for
    :meth:`TokenGuard.requires`.
    """
    requirement = ScopeRequirement(tuple(scopes), any_of)
    guard.route_scopes.update(scopes)  # for the RFC 9728 document
    policy = RoutePolicy.of(guard, acr_values=acr_values, max_age=max_age, dpop=dpop)

    def decorator(endpoint: F) -> F:
        @functools.wraps(endpoint)
        async def wrapper(*args: Any, **kwargs: Any) -> Response:
            connection = next((a for a in (*args, *kwargs.values()) if isinstance(a, HTTPConnection)), None)
            if connection is None:
                raise TypeError("requires() needs an endpoint that takes a Request")
            try:
                claims = await claims_for_connection(guard, connection)
                requirement.check(claims.scopes)
                check_route(policy, claims, connection.scope.get(VERDICT_KEY), guard.clock())
            except TokenError as error:
                return error_response(guard, error)
            _attach(connection.scope, claims)
            return await endpoint(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


def _with_verdict_headers(message: Message, scope: Scope) -> Message:
    """Add the request verdict's response headers (a fresh ``DPoP-Nonce``, RFC 9449 §8.2)."""
    verdict = scope.get(VERDICT_KEY)
    if verdict is None or not verdict.response_headers:
        return message
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in verdict.response_headers]
    return {**message, "headers": [*message.get("headers", []), *extra]}


def _peer(scope: Scope) -> str | None:
    """The peer address for per-client rate limits (behind a proxy, the proxy's unless the
    server rewrites it, e.g. uvicorn's ``--proxy-headers``)."""
    client = scope.get("client")
    return str(client[0]) if client else None
