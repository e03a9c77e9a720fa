"""Flask extension: ``FlaskTokenGuard``, ``@tg.requires(...)``, ``current_token``.

::

    tg = FlaskTokenGuard(app, guard)          # or FlaskTokenGuard(); tg.init_app(app)

    @app.get("/books")
    @tg.requires("books:read")
    def books():
        return {"user": current_token.subject}

Errors are RFC 6750 JSON responses, never Flask's HTML pages. Responses to
authenticated requests get ``Vary: Authorization`` and a safe
``Cache-Control``. Without a guard, one is built from ``app.config``:
``TOKENGUARD_ISSUER``, ``TOKENGUARD_AUDIENCE``, ``TOKENGUARD_CLIENT_ID``,
``TOKENGUARD_CLIENT_SECRET``, ``TOKENGUARD_REALM``,
``TOKENGUARD_ALLOW_QUERY_TOKEN``. ``TOKENGUARD_PROTECT_ALL`` (default off)
requires a token on every endpoint except ``TOKENGUARD_PUBLIC_PATHS``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from flask import Flask, Response, current_app, g, jsonify, request
from werkzeug.local import LocalProxy

from .claims import TokenClaims
from .errors import MissingToken, TokenError
from .guard import TokenGuard
from .request_auth import VERDICT_KEY, verify_wsgi
from .response import PublicCachePolicy, ResponsePolicy
from .route_policy import check_route, route_policy
from .scopes import ScopeRequirement
from .sender_config import is_sender_constrained, metadata_for_path
from .wsgi import find_token

if TYPE_CHECKING:
    from .dpop import DPoPMode

__all__ = ["FlaskTokenGuard", "current_token"]

F = TypeVar("F", bound=Callable[..., Any])

_EXTENSION = "tokenguard"


def _current_claims() -> TokenClaims:
    claims = g.get("token")
    if claims is None:
        raise RuntimeError("no verified token on this request: protect the view with @tg.requires()")
    return cast(TokenClaims, claims)


#: The verified claims of the current request (also at ``g.token``).
current_token: TokenClaims = cast(TokenClaims, LocalProxy(_current_claims))


class FlaskTokenGuard:
    """Bearer-token protection for a Flask app.

    Args:
        app: the app, or ``None`` to call :meth:`init_app` later.
        guard: the shared :class:`TokenGuard`; built from ``app.config`` if ``None``.
        protect_all: require a valid token on every endpoint (not only
            decorated ones), except ``public_paths``.
        public_cache_policy: see :mod:`tokenguard.response`.
    """

    def __init__(
        self,
        app: Flask | None = None,
        guard: TokenGuard | None = None,
        *,
        protect_all: bool | None = None,
        public_paths: tuple[str, ...] | None = None,
        public_cache_policy: PublicCachePolicy = "private",
    ) -> None:
        self.guard = guard
        self.protect_all = protect_all
        self.public_paths = public_paths
        self.public_cache_policy = public_cache_policy
        self.policy = ResponsePolicy(public_cache_policy=public_cache_policy)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register hooks and error rendering on ``app``."""
        if self.guard is None:
            self.guard = self._guard_from_config(app)
        if self.protect_all is None:
            self.protect_all = bool(app.config.get("TOKENGUARD_PROTECT_ALL", False))
        if self.public_paths is None:
            self.public_paths = tuple(app.config.get("TOKENGUARD_PUBLIC_PATHS", ("/health", "/healthz")))
        self.policy = ResponsePolicy(public_paths=self.public_paths, public_cache_policy=self.public_cache_policy)
        app.extensions[_EXTENSION] = self
        app.register_error_handler(TokenError, self._render_error)
        app.before_request(self._serve_metadata)
        app.before_request(self._before_request)
        app.after_request(self._after_request)

    @staticmethod
    def _guard_from_config(app: Flask) -> TokenGuard:
        config = app.config
        issuer = config.get("TOKENGUARD_ISSUER")
        if not issuer:
            raise RuntimeError("FlaskTokenGuard needs a guard or TOKENGUARD_ISSUER in app.config")
        if "TOKENGUARD_AUDIENCE" not in config:
            raise RuntimeError("set TOKENGUARD_AUDIENCE (None to skip the audience check)")
        return TokenGuard.from_issuer(
            issuer,
            audience=config["TOKENGUARD_AUDIENCE"],
            client_id=config.get("TOKENGUARD_CLIENT_ID"),
            client_secret=config.get("TOKENGUARD_CLIENT_SECRET"),
            realm=config.get("TOKENGUARD_REALM", "api"),
            allow_query_token=bool(config.get("TOKENGUARD_ALLOW_QUERY_TOKEN", False)),
            cache=config.get("TOKENGUARD_CACHE"),
            hash_key=_bytes_or_none(config.get("TOKENGUARD_HASH_KEY")),
        )

    def _guard(self) -> TokenGuard:
        assert self.guard is not None, "init_app() was not called"
        return self.guard

    def _render_error(self, error: TokenError) -> Response:
        rendered = self._guard().error_response(error)
        response = jsonify(rendered.body)
        response.status_code = rendered.status_code
        for name, value in rendered.headers:
            response.headers[name] = value
        return response

    def _verify_request(self) -> TokenClaims | None:
        if "token" in g:
            return cast("TokenClaims | None", g.token)
        guard = self._guard()
        if is_sender_constrained(guard):
            # DPoP / mTLS: judged with the whole request (request_auth.py).
            verdict = verify_wsgi(guard, request.environ, request.args.getlist("access_token"))
            claims = verdict.claims if verdict is not None else None
        else:
            token = find_token(guard, request)
            claims = guard.verify_sync(token, client=request.remote_addr) if token is not None else None
        g.token = claims
        return claims

    def _serve_metadata(self) -> Response | None:
        metadata = metadata_for_path(self._guard(), request.method, request.path)
        if metadata is None:
            return None
        # RFC 9728 §3: the protected-resource metadata document, public.
        response = jsonify(metadata[1])
        response.headers.update(metadata[2])
        return response

    def _before_request(self) -> None:
        if not self.protect_all or self.policy.is_public(request.path):
            return
        if self._verify_request() is None:
            raise MissingToken()

    def _after_request(self, response: Response) -> Response:
        if g.get("token") is None:
            return response
        secured = self.policy.secure(list(response.headers.items()), request.path)
        response.headers.clear()
        for name, value in secured:
            response.headers.add(name, value)
        verdict = request.environ.get(VERDICT_KEY)
        for name, value in verdict.response_headers if verdict is not None else ():
            response.headers.add(name, value)  # a fresh DPoP-Nonce (RFC 9449 §8.2)
        return response

    def require_token(self, *scopes: str, any_of: bool = False) -> TokenClaims:
        """Verify the current request's token and scopes inside a view; return the claims.

        Raises:
            TokenError: rendered by the extension's error handler.
        """
        claims = self._verify_request()
        if claims is None:
            raise MissingToken()
        ScopeRequirement(tuple(scopes), any_of).check(claims.scopes)
        return claims

    def requires(
        self,
        *scopes: str,
        any_of: bool = False,
        acr_values: Sequence[str] = (),
        max_age: int | None = None,
        dpop: DPoPMode | None = None,
    ) -> Callable[[F], F]:
        """Decorate a view: a valid token with all (or ``any_of``) ``scopes`` is required.

        ``acr_values`` / ``max_age`` add step-up (RFC 9470) and ``dpop`` the
        route's DPoP mode, as for :meth:`TokenGuard.requires`.
        """
        ScopeRequirement(tuple(scopes), any_of)  # validate scope names at decoration time
        policy = route_policy(acr_values, max_age, dpop)
        if self.guard is not None:
            self.guard.route_scopes.update(scopes)  # for the RFC 9728 document

        def check() -> None:
            claims = self.require_token(*scopes, any_of=any_of)
            check_route(policy, claims, request.environ.get(VERDICT_KEY), self._guard().clock())

        def decorator(view: F) -> F:
            if inspect.iscoroutinefunction(view):

                @functools.wraps(view)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    check()
                    return await view(*args, **kwargs)

                return cast(F, async_wrapper)

            @functools.wraps(view)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                check()
                return current_app.ensure_sync(view)(*args, **kwargs)

            return cast(F, wrapper)

        return decorator

    def requires_any(self, *scopes: str) -> Callable[[F], F]:
        """Decorate a view: any one of ``scopes`` suffices."""
        return self.requires(*scopes, any_of=True)


def _bytes_or_none(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value
