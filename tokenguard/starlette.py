"""Starlette and any ASGI application: middleware and a route decorator.

The middleware is pure ASGI (no ``BaseHTTPMiddleware``): it never buffers a
response body, so streaming, background tasks and WebSockets pass through
untouched. Per connection it:

1. skips lifespan and public paths (:class:`~tokenguard.options.AdapterOptions`:
   none by default; on a FastAPI app its own docs URLs, read from the app);
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
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.authentication import AuthCredentials, BaseUser
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .bearer import bearer_token_bytes, parameter_tokens
from .claims import TokenClaims
from .errors import MissingToken, TokenError
from .guard import TokenGuard
from .options import AdapterOptions, is_cors_preflight, path_in_app, resolve_options
from .request_auth import VERDICT_KEY, verify_asgi
from .requirement import SCOPE_KEY, claims_for_connection
from .response import PublicCachePolicy, ResponsePolicy
from .route_policy import RoutePolicy, check_route, on_scheme_used
from .scopes import ScopeRequirement
from .sender_config import is_sender_constrained, metadata_for_path

if TYPE_CHECKING:
    from .dpop import DPoPMode

__all__ = ["TokenGuardMiddleware", "TokenUser", "error_response", "requires"]

#: Paths left public by default: none. (FastAPI's own docs URLs are public
#: when the app serves them: see ``AdapterOptions.public_docs``.)
DEFAULT_PUBLIC_PATHS: tuple[str, ...] = ()


_NO_DOCS: frozenset[str] = frozenset()

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


def _attach(scope: Scope, claims: TokenClaims | None, scopes: Sequence[str] | None = None) -> None:
    """Store the claims where Starlette code looks; ``scopes``: ``sorted(claims.scopes)`` if known."""
    scope[SCOPE_KEY] = claims
    state = scope.get("state")
    if state is None:
        scope["state"] = state = {}
    state["token"] = claims
    if claims is None:
        scope["user"] = _Anonymous()
        scope["auth"] = AuthCredentials()
    else:
        scope["user"] = TokenUser(claims)
        # AuthCredentials copies the scopes into a list of its own.
        scope["auth"] = AuthCredentials(sorted(claims.scopes) if scopes is None else scopes)


def _is_preflight(scope: Scope) -> bool:
    """Whether an HTTP scope is a CORS preflight (``options.is_cors_preflight``)."""
    if scope["type"] != "http" or scope.get("method") != "OPTIONS":
        return False
    headers = dict(scope["headers"])
    return is_cors_preflight("OPTIONS", lambda name: headers.get(name.encode(), b"").decode("latin-1"))


class TokenGuardMiddleware:
    """Verify Bearer tokens for an ASGI app.

    Args:
        app: the wrapped application.
        guard: the shared :class:`TokenGuard`.
        options: an :class:`~tokenguard.options.AdapterOptions`; or give its
            fields as keywords (``protect``, ``public_paths``,
            ``public_prefixes``, ``public_docs``, ``allow_query_token``,
            ``allow_form_token``, ``public_cache_policy``, ``cors_preflight``), not both.
            Nothing is public by default; on a FastAPI application, the docs
            URLs it serves are (``public_docs``).

    Raises:
        ConfigurationError: invalid options, or ``options`` and keywords together.
    """

    def __init__(
        self,
        app: ASGIApp,
        guard: TokenGuard,
        *,
        options: AdapterOptions | None = None,
        protect: bool | None = None,
        public_paths: Sequence[str] | None = None,
        public_prefixes: Sequence[str] | None = None,
        public_docs: bool | None = None,
        allow_query_token: bool | None = None,
        allow_form_token: bool | None = None,
        public_cache_policy: PublicCachePolicy | None = None,
        cors_preflight: bool | None = None,
    ) -> None:
        self.app = app
        self.guard = guard
        self.options = resolve_options(
            options,
            {
                "protect": protect,
                "public_paths": public_paths,
                "public_prefixes": public_prefixes,
                "public_docs": public_docs,
                "allow_query_token": allow_query_token,
                "allow_form_token": allow_form_token,
                "public_cache_policy": public_cache_policy,
                "cors_preflight": cors_preflight,
            },
        )
        self.protect = self.options.protect
        self.policy = ResponsePolicy(public_cache_policy=self.options.public_cache_policy)
        self._has_public_paths = bool(self.options.public_paths or self.options.public_prefixes)
        # Which app's docs URLs apply: decided once per scope["app"] seen.
        self._seen_app: object = None
        self._docs_owner: object = app
        # Whether that app can serve docs URLs at all (FastAPI's have an openapi_url, maybe None).
        self._owner_has_docs = hasattr(app, "openapi_url")
        self._public_docs = self.options.public_docs
        # sorted(claims.scopes) for request.auth, for the last claims object seen.
        self._last_scopes: tuple[object, tuple[str, ...]] = (None, ())
        # The last docs URLs read, and the app and attribute values they were read from.
        self._docs_key: tuple[object, ...] | None = None
        self._docs_urls = _NO_DOCS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The hot path (a cached token on a protected route) is kept flat: every
        # call and coroutine layer costs a noticeable share of a cached request.
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        if (
            self.guard.resource is not None
            and kind == "http"
            and (metadata := metadata_for_path(self.guard, scope["method"], scope["path"]))
        ):
            # RFC 9728 §3: the protected-resource metadata document, public.
            await JSONResponse(metadata[1], status_code=metadata[0], headers=dict(metadata[2]))(scope, receive, send)
            return
        if (self._has_public_paths or (self._public_docs and self._may_serve_docs(scope))) and self._is_public(scope):
            _attach(scope, None)
            await self.app(scope, receive, send)
            return
        try:
            if is_sender_constrained(self.guard):
                # DPoP / mTLS: judged with the whole request (request_auth.py),
                # tokens found under the same options as below.
                receive, form_tokens = await self._form_tokens(scope, receive)
                verdict = await verify_asgi(self.guard, scope, form_tokens, self.options)
                claims = verdict.claims if verdict is not None else None
            else:
                # The common case first: exactly one Authorization header, no access_token
                # possible in the query (what parameter_tokens() needs to find one), no
                # form body to read (RFC 6750 §2.2). Anything else: the full rules.
                token = None
                found = b""
                for name, value in scope["headers"]:
                    if name == b"authorization":
                        found = b"" if found else value  # two headers: the full rules refuse them
                query = scope.get("query_string")
                if (
                    found
                    and not (query and (b"access_token" in query or b"%" in query))
                    and (kind != "http" or scope.get("method") in ("GET", "HEAD") or not self._form_tokens_allowed())
                ):
                    token = bearer_token_bytes(found, self.guard.max_token_bytes)
                if token is None:
                    receive, token = await self._find_token(scope, receive)
                if token is not None:
                    # The peer address, for per-client rate limits (behind a proxy, the
                    # proxy's unless the server rewrites it, e.g. uvicorn's --proxy-headers).
                    client = scope.get("client")
                    claims = await self.guard.verify(token, client=str(client[0]) if client else None)
                else:
                    claims = None
        except TokenError as error:
            await self._reject(scope, receive, send, error)
            return
        if claims is None:
            if self.protect and not (self.options.cors_preflight and _is_preflight(scope)):
                await self._reject(scope, receive, send, MissingToken())
                return
            _attach(scope, None)
        else:
            last = self._last_scopes
            _attach(scope, claims, last[1] if last[0] is claims else self._sorted_scopes(claims))
        if kind == "websocket":
            await self.app(scope, receive, send)
            return
        started = False
        policy = self.policy if claims is not None else None
        path = scope["path"]

        async def send_wrapper(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if policy is not None:
                    # Authenticated: Vary and Cache-Control. A copy: the app may reuse its messages.
                    message = {**message, "headers": policy.secure_raw(message.get("headers", ()), path)}
                    message = _with_verdict_headers(message, scope)
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except TokenError as error:
            # Raised by a route's requirement (decorator or dependency).
            if started:
                raise
            await self._reject(scope, receive, send, error)

    def _sorted_scopes(self, claims: TokenClaims) -> tuple[str, ...]:
        """``sorted(claims.scopes)``, remembered for the last claims object (a cached
        token returns the same object on every hit)."""
        scopes = tuple(sorted(claims.scopes))
        self._last_scopes = (claims, scopes)
        return scopes

    def _form_tokens_allowed(self) -> bool:
        return self.options.form_tokens_allowed(self.guard)

    def _may_serve_docs(self, scope: Scope) -> bool:
        """Whether the app whose docs URLs apply may serve any (it has an ``openapi_url``)."""
        if scope.get("app") is not self._seen_app:
            self._docs_app(scope)
        return self._owner_has_docs

    def _is_public(self, scope: Scope) -> bool:
        options = self.options
        # FastAPI serves its docs only to GET/HEAD: another method on the same path
        # (an app's own POST route at docs_url="/") is not the docs page.
        docs = _NO_DOCS
        if options.public_docs and scope["type"] == "http" and scope.get("method") in ("GET", "HEAD"):
            owner = self._docs_app(scope)
            # One attribute read decides for anything but a FastAPI app serving an OpenAPI document.
            if isinstance(getattr(owner, "openapi_url", None), str):
                docs = self._docs(owner)
        if not docs and not self._has_public_paths:
            return False  # nothing can be public: skip the path work
        return options.is_public(path_in_app(scope["path"], scope.get("root_path", "")), docs)

    def _docs(self, app: object) -> frozenset[str]:
        """:func:`_served_docs` of ``app``, rebuilt only when its docs attributes change."""
        key = (
            app,
            getattr(app, "openapi_url", None),
            getattr(app, "redoc_url", None),
            getattr(app, "docs_url", None),
            getattr(app, "swagger_ui_oauth2_redirect_url", None),
        )
        if key != self._docs_key:
            self._docs_key = key
            self._docs_urls = _served_docs(app)
        return self._docs_urls

    def _docs_app(self, scope: Scope) -> object:
        """The app whose docs URLs are this middleware's to exempt.

        ``scope["app"]`` when this middleware sits in that app's own stack
        (``app.add_middleware``); else the wrapped app. A parent app's docs
        URLs must not exempt paths of a sub-app mounted under it.
        """
        app = scope.get("app")
        if app is not self._seen_app:
            self._seen_app = app
            self._docs_owner = app if _in_stack_of(app, self) else self.app
            self._owner_has_docs = hasattr(self._docs_owner, "openapi_url")
        return self._docs_owner

    async def _find_token(self, scope: Scope, receive: Receive) -> tuple[Receive, str | None]:
        authorization = [v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"]
        query_tokens = parameter_tokens(scope.get("query_string", b""))
        receive, form_tokens = await self._form_tokens(scope, receive)
        try:
            return receive, self.options.extract(self.guard, authorization, query_tokens, form_tokens)
        except MissingToken:
            return receive, None

    async def _form_tokens(self, scope: Scope, receive: Receive) -> tuple[Receive, list[str]]:
        if (
            self.options.form_tokens_allowed(self.guard)
            and scope["type"] == "http"
            and scope.get("method") not in ("GET", "HEAD")
        ):
            return await _read_form_tokens(scope, receive)
        return receive, []

    async def _reject(self, scope: Scope, receive: Receive, send: Send, error: TokenError) -> None:
        if scope["type"] == "websocket":
            # Close before accept: the server answers the handshake with 403.
            reason = error.error_code or "unauthorized"
            await send({"type": "websocket.close", "code": 1008, "reason": reason})
            return
        await error_response(self.guard, error)(scope, receive, send)


async def _read_form_tokens(scope: Scope, receive: Receive) -> tuple[Receive, list[str]]:
    """Read an urlencoded body (up to 64 KiB) for ``access_token`` and replay it to the app.

    A longer body, or one without ``Content-Length`` (chunked), is not
    searched, as in the WSGI and Django adapters (a WSGI application cannot
    count on reading a body of unknown length): the same request gets the
    same answer everywhere, and a token is never cut in two.
    """
    content_type = ""
    declared: int | None = None
    for key, value in scope["headers"]:
        if key == b"content-type":
            content_type = value.decode("latin-1").split(";")[0].strip().lower()
        elif key == b"content-length":
            declared = int(value) if value.isdigit() else None
    if content_type != "application/x-www-form-urlencoded" or declared is None or declared > _MAX_FORM_BYTES:
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
    tokens = parameter_tokens(body) if len(body) <= _MAX_FORM_BYTES else []
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay, tokens


def _in_stack_of(app: object, middleware: object) -> bool:
    """Whether ``middleware`` is one of the layers of ``app``'s own middleware stack."""
    layer = getattr(app, "middleware_stack", None)
    for _ in range(64):  # a stack is a short chain; bound the walk anyway
        if layer is None:
            return False
        if layer is middleware:
            return True
        layer = getattr(layer, "app", None)
    return False


def _served_docs(app: object) -> frozenset[str]:
    """The docs URLs a FastAPI app serves, read from its attributes (no fastapi import).

    As FastAPI's own ``setup()``: nothing without ``openapi_url``; the OAuth2
    redirect page only along with the Swagger UI (``docs_url``).
    """
    openapi_url = getattr(app, "openapi_url", None)
    if not isinstance(openapi_url, str):
        return frozenset()
    urls = [openapi_url, getattr(app, "redoc_url", None)]
    docs_url = getattr(app, "docs_url", None)
    if isinstance(docs_url, str):
        urls += [docs_url, getattr(app, "swagger_ui_oauth2_redirect_url", None)]
    return frozenset(u for u in urls if isinstance(u, str) and u.startswith("/"))


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
    guard.declare_scopes(*scopes)  # for the RFC 9728 document
    policy = RoutePolicy.of(guard, acr_values=acr_values, max_age=max_age, dpop=dpop)

    def decorator(endpoint: F) -> F:
        @functools.wraps(endpoint)
        async def wrapper(*args: Any, **kwargs: Any) -> Response:
            connection = next((a for a in (*args, *kwargs.values()) if isinstance(a, HTTPConnection)), None)
            if connection is None:
                raise TypeError("requires() needs an endpoint that takes a Request")
            try:
                claims = await claims_for_connection(guard, connection)
                try:
                    requirement.check(claims.scopes)
                except TokenError as error:
                    raise on_scheme_used(error, connection.scope.get(VERDICT_KEY)) from None
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


# ---------------------------------------------------------------- readiness


def readiness_lifespan(
    guard: TokenGuard,
    *,
    fail_fast: bool = True,
    lifespan: Callable[[Any], Any] | None = None,
) -> Callable[[Any], Any]:
    """A Starlette/FastAPI ``lifespan`` that runs :meth:`TokenGuard.check` at start-up.

    Without it the guard starts lazily and a wrong issuer URL or introspection
    secret shows only when users are refused. With ``fail_fast`` (default) the
    application does not start when a check fails (the server logs the
    :class:`~tokenguard.readiness.NotReady` message, which lists every check);
    otherwise failures are logged at ERROR and start-up continues. The report
    is kept on ``app.state.tokenguard_readiness``. The guard is closed on shutdown.

    Args:
        guard: the application's guard.
        fail_fast: refuse to start when a check fails.
        lifespan: the application's own lifespan, entered after the check.

    Returns:
        A lifespan factory: ``FastAPI(lifespan=readiness_lifespan(guard))``.

    Raises:
        NotReady: (at start-up, with ``fail_fast``) a check failed.
    """
    import contextlib
    import logging

    @contextlib.asynccontextmanager
    async def run(app: Any) -> Any:
        report = await guard.check()
        state = getattr(app, "state", None)
        if state is not None:
            state.tokenguard_readiness = report
        if not report.ok:
            if fail_fast:
                report.raise_for_failure()
            logging.getLogger("tokenguard").error("tokenguard is not ready:\n%s", report)
        try:
            if lifespan is None:
                yield None
            else:
                async with lifespan(app) as inner:
                    yield inner
        finally:
            await guard.aclose()

    return run


def readiness_endpoint(
    guard: TokenGuard, *, interval: float = 10.0, details: bool = False
) -> Callable[[Any], Awaitable[Response]]:
    """A Starlette endpoint answering 200 when :meth:`TokenGuard.check` passes, else 503.

    Mount it on the probe's path: ``Route("/ready", readiness_endpoint(guard))``,
    or with FastAPI ``app.add_route("/ready", readiness_endpoint(guard))``.

    Args:
        guard: the application's guard.
        interval: seconds a report is reused
            (:class:`~tokenguard.readiness.ReadinessProbe`): however often the
            path is polled, the issuer and the introspection endpoint see at
            most one check per interval.
        details: answer with the whole report (``{"ok": ..., "checks": [...]}``:
            issuer and endpoint URLs, causes of failures). The default answers
            ``{"ok": true|false}`` only, as readiness paths are often public;
            the causes of a failure are logged at ERROR either way.

    Raises:
        ConfigurationError: ``interval`` is not a positive number, or
            ``details`` not a bool.
    """
    from .errors import ConfigurationError
    from .readiness import ReadinessProbe

    if not isinstance(details, bool):
        raise ConfigurationError(f"details must be True or False, not {details!r}")
    probe = ReadinessProbe(guard, interval=interval)

    async def endpoint(request: Any) -> Response:
        report = await probe.report()
        body = report.to_dict() if details else {"ok": report.ok}
        return JSONResponse(body, status_code=200 if report.ok else 503, headers={"Cache-Control": "no-store"})

    return endpoint
