"""Any WSGI application: a middleware that verifies Bearer tokens.

Trust model: the ``Authorization`` header is read from the WSGI environ as
the server received it. The claims are stored at
``environ["tokenguard.claims"]`` (``None`` when no token was sent and the
path does not require one). Verification is blocking (``verify_sync``); the
guard's caches and fetches are thread-safe, so this works under threaded
servers (gunicorn ``gthread``, Werkzeug ``threaded=True``), and concurrent
first requests share one JWKS fetch.

Public paths and token places follow :class:`~tokenguard.options.AdapterOptions`,
with the same defaults as the ASGI middleware and the Flask extension. Paths
are ``PATH_INFO``, relative to where the application is mounted
(``SCRIPT_NAME``). With form tokens allowed, an urlencoded body is read (up to
64 KiB) and replayed: the application still finds it in ``wsgi.input``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request

from .bearer import bearer_token_bytes, parameter_tokens, query_may_hold_token
from .claims import TokenClaims
from .errors import MissingToken, TokenError
from .guard import TokenGuard
from .options import AdapterOptions, is_cors_preflight, resolve_options
from .request_auth import VERDICT_KEY, RequestVerdict, verify_wsgi
from .response import PublicCachePolicy, ResponsePolicy
from .sender_config import is_sender_constrained, metadata_for_path

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "CLAIMS_KEY",
    "TokenGuardWSGIMiddleware",
    "common_token",
    "error_wsgi_response",
    "find_token",
    "secure_start_response",
]

#: The environ key holding the verified :class:`TokenClaims` (or ``None``).
CLAIMS_KEY = "tokenguard.claims"


#: Form bodies read for an ``access_token`` are capped (only with form tokens allowed).
_MAX_FORM_BYTES = 64 * 1024


def find_token(guard: TokenGuard, request: Request, options: AdapterOptions | None = None) -> str | None:
    """The request's Bearer token, ``None`` when it carries none.

    A form body is looked at only when form tokens are allowed, for an
    urlencoded non-GET request (RFC 6750 §2.2) of at most 64 KiB; it is read
    and put back into ``wsgi.input``, so the application reads it unchanged.

    Raises:
        InvalidRequest: malformed, duplicated or in a disallowed place.
        InvalidToken: over the size limit.
    """
    options = options or _GUARD_DEFAULTS
    token = common_token(guard, request.environ, options)
    if token is not None:
        return token
    query_tokens, form_tokens = parameter_tokens_of(guard, request, options)
    try:
        return options.extract(guard, request.headers.getlist("Authorization"), query_tokens, form_tokens)
    except MissingToken:
        return None


def parameter_tokens_of(guard: TokenGuard, request: Request, options: AdapterOptions) -> tuple[list[str], list[str]]:
    """The ``access_token`` values of the query string and (when form tokens are
    allowed) of an urlencoded body of at most 64 KiB, which is replayed."""
    form_tokens: list[str] = []
    if (
        options.form_tokens_allowed(guard)
        and request.method not in ("GET", "HEAD")
        and request.mimetype == "application/x-www-form-urlencoded"
    ):
        form_tokens = _form_tokens(request.environ)
    return parameter_tokens(request.environ.get("QUERY_STRING", "")), form_tokens


_GUARD_DEFAULTS = AdapterOptions()


def common_token(guard: TokenGuard, environ: WSGIEnvironment, options: AdapterOptions) -> str | None:
    """The token when the request carries one ``Authorization: Bearer <b64token>``
    and nothing else that could hold a token; ``None``: take :func:`find_token`'s full rules.

    Why: this is nearly every request, and it needs no ``Request`` object,
    no header mapping and none of the rules for several token places
    (RFC 6750 §2): the header as the server put it in the environ, no
    ``access_token`` possible in the query, no form body to read.

    Args:
        guard: the guard whose size limit and form setting apply.
        environ: the request's WSGI environ.
        options: the adapter's options.

    Returns:
        The token, or ``None`` when the full rules must decide.
    """
    value = environ.get("HTTP_AUTHORIZATION")
    if type(value) is not str or query_may_hold_token(environ.get("QUERY_STRING", "")):
        return None
    if environ.get("REQUEST_METHOD") not in ("GET", "HEAD") and options.form_tokens_allowed(guard):
        return None  # a form body may hold a token too (RFC 6750 §2.2)
    try:
        raw = value.encode("latin-1")  # WSGI strings are latin-1 mapped bytes (PEP 3333)
    except UnicodeEncodeError:
        return None
    return bearer_token_bytes(raw, guard.max_token_bytes)


def _form_tokens(environ: WSGIEnvironment) -> list[str]:
    """``access_token`` values of an urlencoded body, which is replayed into ``wsgi.input``."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return []
    if length <= 0 or length > _MAX_FORM_BYTES:
        # Unknown or too long: the body is left alone for the application.
        return []
    stream = environ["wsgi.input"]
    body = stream.read(length)
    # The application reads the same bytes, and a framework that already
    # parsed them (Flask's request.form) is unaffected.
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return parameter_tokens(body)


def error_wsgi_response(guard: TokenGuard, error: TokenError) -> tuple[str, list[tuple[str, str]], bytes]:
    """Status line, headers and body for ``error``."""
    rendered = guard.error_response(error)
    body = json.dumps(rendered.body).encode()
    headers = [*rendered.headers, ("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    return f"{rendered.status_code} {HTTPStatus(rendered.status_code).phrase}", headers, body


def secure_start_response(
    start_response: StartResponse, policy: ResponsePolicy, path: str, verdict: RequestVerdict | None = None
) -> StartResponse:
    """Wrap ``start_response`` to apply the authenticated-response header rules
    (and add the verdict's headers, e.g. a fresh ``DPoP-Nonce``)."""

    def wrapped(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        secured = policy.secure(headers, path)
        if verdict is not None:
            secured = [*secured, *verdict.response_headers]
        return start_response(status, secured, exc_info)

    return wrapped


class TokenGuardWSGIMiddleware:
    """Verify Bearer tokens in front of any WSGI application.

    Args:
        app: the wrapped WSGI application.
        guard: the shared :class:`TokenGuard`.
        options: an :class:`~tokenguard.options.AdapterOptions`; or give its
            fields as keywords (``protect``, ``public_paths``,
            ``public_prefixes``, ``allow_query_token``, ``allow_form_token``,
            ``public_cache_policy``, ``cors_preflight``), not both. Nothing is public by default.

    Raises:
        ConfigurationError: invalid options, or ``options`` and keywords together.
    """

    def __init__(
        self,
        app: WSGIApplication,
        guard: TokenGuard,
        *,
        options: AdapterOptions | None = None,
        protect: bool | None = None,
        public_paths: Sequence[str] | None = None,
        public_prefixes: Sequence[str] | None = None,
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
                "allow_query_token": allow_query_token,
                "allow_form_token": allow_form_token,
                "public_cache_policy": public_cache_policy,
                "cors_preflight": cors_preflight,
            },
        )
        self.protect = self.options.protect
        self.policy = ResponsePolicy(public_cache_policy=self.options.public_cache_policy)
        self._has_public_paths = bool(self.options.public_paths or self.options.public_prefixes)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        guard = self.guard
        if guard.resource is not None:
            metadata = metadata_for_path(guard, environ.get("REQUEST_METHOD", "GET"), _path(environ))
            if metadata is not None:
                # RFC 9728 §3: the protected-resource metadata document, public.
                body = json.dumps(metadata[1]).encode()
                start_response("200 OK", [*metadata[2], ("Content-Type", "application/json")])
                return [body]
        if self._has_public_paths and self.options.is_public(_path(environ)):
            environ[CLAIMS_KEY] = None
            return self.app(environ, start_response)
        claims: TokenClaims | None = None
        try:
            if is_sender_constrained(guard):
                # DPoP / mTLS: judged with the whole request (request_auth.py),
                # tokens found under the same options.
                request = Request(environ, shallow=True)
                query_tokens, form_tokens = parameter_tokens_of(guard, request, self.options)
                verdict = verify_wsgi(guard, environ, query_tokens, form_tokens, self.options)
                claims = verdict.claims if verdict is not None else None
                if claims is None and self.protect and not (self.options.cors_preflight and _is_preflight(environ)):
                    raise MissingToken()
            else:
                token = common_token(guard, environ, self.options)
                if token is None:
                    token = find_token(guard, Request(environ, shallow=True), self.options)
                if token is not None:
                    claims = guard.verify_sync(token, client=environ.get("REMOTE_ADDR"))
                elif self.protect and not (self.options.cors_preflight and _is_preflight(environ)):
                    raise MissingToken()
        except TokenError as error:
            status, headers, body = error_wsgi_response(self.guard, error)
            start_response(status, headers)
            return [body]
        environ[CLAIMS_KEY] = claims
        if claims is None:
            return self.app(environ, start_response)
        policy = self.policy
        verdict = environ.get(VERDICT_KEY)
        extra = verdict.response_headers if verdict is not None else ()

        def secured_start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            # The path is worked out only when a route's Cache-Control may need a warning.
            secured = policy.quick(headers)
            if secured is None:
                secured = policy.secure(headers, _path(environ))
            if extra:
                secured = [*secured, *extra]  # e.g. a fresh DPoP-Nonce (RFC 9449 §8.2)
            return start_response(status, secured, exc_info)

        return self.app(environ, secured_start_response)


def _is_preflight(environ: WSGIEnvironment) -> bool:
    """Whether a WSGI request is a CORS preflight (``options.is_cors_preflight``)."""
    return is_cors_preflight(
        environ.get("REQUEST_METHOD", ""),
        lambda name: environ.get("HTTP_" + name.upper().replace("-", "_")),
    )


def _path(environ: WSGIEnvironment) -> str:
    """The request path relative to the mount (``PATH_INFO``, decoded as werkzeug does)."""
    raw_path = environ.get("PATH_INFO", "")
    # werkzeug folds a leading "//" into "/"; the application may not.
    return raw_path if raw_path.startswith("//") else Request(environ, shallow=True).path
