"""Flask extension: ``FlaskTokenGuard``, ``@tg.requires(...)``, ``current_token``.

::

    tg = FlaskTokenGuard(app, guard)          # or FlaskTokenGuard(); tg.init_app(app)

    @app.get("/books")
    @tg.requires("books:read")
    def books():
        return {"user": current_token.subject}

Errors are RFC 6750 JSON responses, never Flask's HTML pages. Responses to
authenticated requests get ``Vary: Authorization`` and a safe
``Cache-Control``. The claims belong to one request: they are kept in the
request's WSGI environ (``g.token`` mirrors them and is cleared when the
request ends), so an outer ``app.app_context()`` never carries one request's
claims into the next.

Options are those of every adapter (:class:`~tokenguard.options.AdapterOptions`,
same defaults): every endpoint requires a token unless its path is public,
and nothing is public by default. Keywords win over ``app.config``, which is
read as follows (only ``app.config``: environment variables are not read; load
them with e.g. ``app.config.from_prefixed_env()`` or ``app.config.update(...)``):

``TOKENGUARD_PROTECT_ALL``, ``TOKENGUARD_ALLOW_QUERY_TOKEN``, ``TOKENGUARD_ALLOW_FORM_TOKEN``,
``TOKENGUARD_CORS_PREFLIGHT``
    booleans: ``True``/``False``, or the strings ``true/false``, ``1/0``,
    ``yes/no``, ``on/off``; anything else is a :class:`ConfigurationError`.
``TOKENGUARD_PUBLIC_PATHS``, ``TOKENGUARD_PUBLIC_PREFIXES``
    a list of paths, or one comma-separated string (``"/health,/healthz"``).

Without a guard, one is built from ``TOKENGUARD_ISSUER``,
``TOKENGUARD_AUDIENCE``, ``TOKENGUARD_CLIENT_ID``, ``TOKENGUARD_CLIENT_SECRET``,
``TOKENGUARD_REALM``, ``TOKENGUARD_CACHE`` and ``TOKENGUARD_HASH_KEY``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from flask import Flask, Request, Response, current_app, g, jsonify, request
from werkzeug.local import LocalProxy

from ._config import parse_bool
from .claims import TokenClaims
from .errors import ConfigurationError, MissingToken, TokenError
from .guard import TokenGuard
from .options import AdapterOptions, _checked_paths, is_cors_preflight, resolve_options
from .request_auth import VERDICT_KEY, verify_wsgi
from .response import PublicCachePolicy, ResponsePolicy, has_merged_fields
from .route_policy import RoutePolicy, check_route, on_scheme_used, route_policy
from .scopes import ScopeRequirement
from .sender_config import is_sender_constrained, metadata_for_path
from .wsgi import CLAIMS_KEY, common_token, find_token, parameter_tokens_of

if TYPE_CHECKING:
    from .dpop import DPoPMode

__all__ = ["FlaskTokenGuard", "current_token"]

F = TypeVar("F", bound=Callable[..., Any])

_EXTENSION = "tokenguard"
#: Per app: (AdapterOptions, ResponsePolicy, TokenGuard) from that app's init_app().
_APP_STATE = "tokenguard.state"


#: Marks, in the request's environ, that its token was looked for already.
_VERIFIED_KEY = "tokenguard.verified"


def _current_claims() -> TokenClaims:
    claims = request.environ.get(CLAIMS_KEY)
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
        options: an :class:`~tokenguard.options.AdapterOptions`; or give its
            fields as keywords (``protect_all`` is ``protect``), not both.
            Unset ones are read from ``app.config`` (see the module
            docstring), else the defaults every adapter shares.

    Raises:
        ConfigurationError: invalid options or ``app.config`` values.
    """

    def __init__(
        self,
        app: Flask | None = None,
        guard: TokenGuard | None = None,
        *,
        options: AdapterOptions | None = None,
        protect_all: bool | None = None,
        public_paths: Sequence[str] | None = None,
        public_prefixes: Sequence[str] | None = None,
        allow_query_token: bool | None = None,
        allow_form_token: bool | None = None,
        public_cache_policy: PublicCachePolicy | None = None,
        cors_preflight: bool | None = None,
    ) -> None:
        self.guard = guard
        self._guard_given = guard
        #: Every route rule decorated so far (scopes and route policy), checked
        #: against each app's guard in init_app: a guard built from app.config
        #: is not known when views are decorated.
        self._route_rules: list[tuple[tuple[str, ...], dict[str, Any]]] = []
        #: The guard of every app initialised (once each): a route decorated
        #: later is checked against all of them, not only the last.
        self._app_guards: list[TokenGuard] = []
        if protect_all is not None and not isinstance(protect_all, bool):
            # Checked here so the error names the keyword the user wrote, not AdapterOptions' "protect".
            raise ConfigurationError(f"protect_all must be True or False, not {protect_all!r}")
        self._given: dict[str, Any] = {
            "protect": protect_all,
            "public_paths": public_paths,
            "public_prefixes": public_prefixes,
            "allow_query_token": allow_query_token,
            "allow_form_token": allow_form_token,
            "public_cache_policy": public_cache_policy,
            "cors_preflight": cors_preflight,
        }
        self.options = resolve_options(options, self._given)
        self._given = {name: value for name, value in self._given.items() if value is not None}
        self._options_given = options
        self.policy = ResponsePolicy(public_cache_policy=self.options.public_cache_policy)
        if app is not None:
            self.init_app(app)

    @property
    def _has_public_paths(self) -> bool:
        return bool(self.options.public_paths or self.options.public_prefixes)

    @property
    def protect_all(self) -> bool:
        """Whether every non-public endpoint requires a token."""
        return self.options.protect

    def init_app(self, app: Flask) -> None:
        """Register hooks and error rendering on ``app``.

        Raises:
            ConfigurationError: an invalid ``TOKENGUARD_*`` value in ``app.config``,
                or a route decorated with a DPoP mode this app's guard cannot serve.
        """
        # One extension may serve several apps (application factory): each app
        # keeps the options and guard its own config gave (app.extensions), so
        # one app's public paths or issuer never apply to another.
        options = self.options
        if self._options_given is None:
            options = AdapterOptions(**{**_options_from_config(app.config), **self._given})
        guard = self._guard_given if self._guard_given is not None else self._guard_from_config(app)
        policy = ResponsePolicy(public_cache_policy=options.public_cache_policy)
        for scopes, rule in self._route_rules:
            _check_rule(guard, scopes, rule)
        if not any(known is guard for known in self._app_guards):
            self._app_guards.append(guard)
        app.extensions[_APP_STATE] = (options, policy, guard)
        # The attributes show the last app initialised, as before.
        self.options, self.policy, self.guard = options, policy, guard
        app.extensions[_EXTENSION] = self
        app.register_error_handler(TokenError, self._render_error)
        app.before_request(self._serve_metadata)
        app.before_request(self._before_request)
        app.after_request(self._after_request)
        app.teardown_request(self._teardown_request)

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
            allow_query_token=_config_bool(config, "TOKENGUARD_ALLOW_QUERY_TOKEN"),
            allow_form_token=_config_bool(config, "TOKENGUARD_ALLOW_FORM_TOKEN"),
            cache=config.get("TOKENGUARD_CACHE"),
            hash_key=_bytes_or_none(config.get("TOKENGUARD_HASH_KEY")),
        )

    def _state(self) -> tuple[AdapterOptions, ResponsePolicy, TokenGuard]:
        """The options, response policy and guard of the app serving the current request."""
        state = current_app.extensions.get(_APP_STATE)
        if state is None:
            raise RuntimeError("FlaskTokenGuard.init_app() was not called for this app")
        return cast("tuple[AdapterOptions, ResponsePolicy, TokenGuard]", state)

    def _guard(self) -> TokenGuard:
        return self._state()[2]

    def _render_error(self, error: TokenError) -> Response:
        rendered = self._guard().error_response(error)
        response = jsonify(rendered.body)
        response.status_code = rendered.status_code
        for name, value in rendered.headers:
            response.headers[name] = value
        return response

    def _verify_request(self) -> TokenClaims | None:
        # The request's environ, not g: g belongs to the app context, which an
        # outer app.app_context() keeps alive across requests. The request is
        # read through its proxy once: each proxy access costs a context lookup.
        current = cast(Request, request._get_current_object())  # type: ignore[attr-defined]
        environ = current.environ
        if environ.get(_VERIFIED_KEY):
            return cast("TokenClaims | None", environ.get(CLAIMS_KEY))
        options, _, guard = self._state()
        if is_sender_constrained(guard):
            # DPoP / mTLS: judged with the whole request (request_auth.py),
            # tokens found under the same options.
            query_tokens, form_tokens = parameter_tokens_of(guard, current, options)
            verdict = verify_wsgi(guard, environ, query_tokens, form_tokens, options)
            claims = verdict.claims if verdict is not None else None
        else:
            token = common_token(guard, environ, options)
            if token is None:
                token = find_token(guard, current, options)
            claims = guard.verify_sync(token, client=environ.get("REMOTE_ADDR")) if token is not None else None
        environ[CLAIMS_KEY] = claims
        environ[_VERIFIED_KEY] = True
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
        # A claim left in g by an earlier request of the same app context is
        # never this request's.
        g.pop("token", None)
        options = self._state()[0]
        if not options.protect or options.is_public(request.path):
            return
        if self._verify_request() is None:
            if options.cors_preflight and is_cors_preflight(request.method, request.headers.get):
                return  # for Flask-CORS (an after_request hook) to answer
            raise MissingToken()

    def _after_request(self, response: Response) -> Response:
        if request.environ.get(CLAIMS_KEY) is None:
            return response
        headers = response.headers
        verdict = request.environ.get(VERDICT_KEY)
        if not has_merged_fields(headers):
            # Neither Vary nor Cache-Control: the two fields are appended, nothing else is touched.
            headers.add("Vary", "Authorization")
            headers.add("Cache-Control", "no-store")
        else:
            secured = self._state()[1].secure(list(headers.items()), request.path)
            headers.clear()
            for name, value in secured:
                headers.add(name, value)
        for name, value in verdict.response_headers if verdict is not None else ():
            headers.add(name, value)  # a fresh DPoP-Nonce (RFC 9449 §8.2)
        return response

    @staticmethod
    def _teardown_request(exc: BaseException | None) -> None:
        g.pop("token", None)

    def require_token(self, *scopes: str, any_of: bool = False) -> TokenClaims:
        """Verify the current request's token and scopes inside a view; return the claims.

        Raises:
            TokenError: rendered by the extension's error handler.
        """
        claims = self._verify_request()
        if claims is None:
            raise MissingToken()
        try:
            ScopeRequirement(tuple(scopes), any_of).check(claims.scopes)
        except TokenError as error:
            # RFC 9449 §7.1: a DPoP request's 403 goes on the DPoP challenge.
            raise on_scheme_used(error, request.environ.get(VERDICT_KEY)) from None
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
        rule = {"acr_values": acr_values, "max_age": max_age, "dpop": dpop}
        # Guards known now: a DPoP mode one cannot serve is refused here, and
        # the scopes are declared to each (RFC 9728 document, scopes_supported).
        known = self._app_guards or ([self.guard] if self.guard is not None else [])
        for guard in known:
            _check_rule(guard, scopes, rule)
        self._route_rules.append((scopes, rule))

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


def _check_rule(guard: TokenGuard, scopes: tuple[str, ...], rule: dict[str, Any]) -> None:
    """Check a decorated route's rule against ``guard`` and declare its scopes.

    Raises:
        ConfigurationError: the route's DPoP mode needs DPoP on the guard, or
            relaxes the guard's ``dpop="required"`` (as :meth:`TokenGuard.requires`).
    """
    RoutePolicy.of(guard, **rule)
    guard.declare_scopes(*scopes)


def _options_from_config(config: Any) -> dict[str, Any]:
    """The adapter options set in ``app.config`` (only those present)."""
    found: dict[str, Any] = {}
    for key, name in (
        ("TOKENGUARD_PROTECT_ALL", "protect"),
        ("TOKENGUARD_ALLOW_QUERY_TOKEN", "allow_query_token"),
        ("TOKENGUARD_ALLOW_FORM_TOKEN", "allow_form_token"),
        ("TOKENGUARD_CORS_PREFLIGHT", "cors_preflight"),
    ):
        if config.get(key) is not None:
            found[name] = parse_bool(config[key], key)
    for key, name in (("TOKENGUARD_PUBLIC_PATHS", "public_paths"), ("TOKENGUARD_PUBLIC_PREFIXES", "public_prefixes")):
        if config.get(key) is not None:
            found[name] = _config_paths(config[key], key)
    return found


def _config_bool(config: Any, key: str) -> bool:
    value = config.get(key)
    return False if value is None else parse_bool(value, key)


def _config_paths(value: object, key: str) -> tuple[str, ...]:
    # A string is documented as a comma-separated list (what an environment
    # variable holds), so "/health" is the one path /health, never its characters.
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    # Checked here, so an error names the config key the user set (not "public_paths").
    return _checked_paths(value, key)


def _bytes_or_none(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


# ---------------------------------------------------------------- readiness


def register_check_command(app: Flask, guard: TokenGuard, name: str = "tokenguard-check") -> None:
    """Add ``flask tokenguard-check``: run :meth:`TokenGuard.check_sync` and print the report.

    Exit code 0 when ready, 1 when a check failed: run it before starting the
    WSGI server (``flask tokenguard-check && gunicorn app:app``) to fail fast.
    ``--json`` prints the report as JSON.
    """
    import json

    import click

    @app.cli.command(name, help="Check tokenguard's issuers and introspection credentials.")
    @click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
    def command(as_json: bool) -> None:
        report = guard.check_sync()
        click.echo(json.dumps(report.to_dict(), indent=2) if as_json else str(report))
        if not report.ok:
            raise SystemExit(1)


def check_at_startup(guard: TokenGuard, *, fail_fast: bool = True) -> None:
    """Run :meth:`TokenGuard.check_sync` now (call it in the application factory).

    With ``fail_fast`` a failed check raises, so the process does not start
    serving; otherwise failures are logged at ERROR.

    Raises:
        NotReady: a check failed and ``fail_fast`` is set.
    """
    import logging

    report = guard.check_sync()
    if not report.ok:
        if fail_fast:
            report.raise_for_failure()
        logging.getLogger("tokenguard").error("tokenguard is not ready:\n%s", report)
