"""Any WSGI application: a middleware that verifies Bearer tokens.

Trust model: the ``Authorization`` header is read from the WSGI environ as
the server received it. The claims are stored at
``environ["tokenguard.claims"]`` (``None`` when no token was sent and the
path does not require one). Verification is blocking (``verify_sync``); the
guard's caches and fetches are thread-safe, so this works under threaded
servers (gunicorn ``gthread``, Werkzeug ``threaded=True``), and concurrent
first requests share one JWKS fetch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request

from .claims import TokenClaims
from .errors import MissingToken, TokenError
from .guard import TokenGuard
from .request_auth import VERDICT_KEY, RequestVerdict, verify_wsgi
from .response import PublicCachePolicy, ResponsePolicy
from .sender_config import is_sender_constrained, metadata_for_path

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["CLAIMS_KEY", "TokenGuardWSGIMiddleware", "error_wsgi_response", "find_token", "secure_start_response"]

#: The environ key holding the verified :class:`TokenClaims` (or ``None``).
CLAIMS_KEY = "tokenguard.claims"


def find_token(guard: TokenGuard, request: Request) -> str | None:
    """The request's Bearer token, ``None`` when it carries none.

    Raises:
        InvalidRequest: malformed, duplicated or in a disallowed place.
        InvalidToken: over the size limit.
    """
    form_tokens: list[str] = []
    if (
        guard.allow_form_token
        and request.method not in ("GET", "HEAD")
        and request.mimetype == "application/x-www-form-urlencoded"
    ):
        form_tokens = request.form.getlist("access_token")
    try:
        return guard.extract(
            request.headers.getlist("Authorization"),
            request.args.getlist("access_token"),
            form_tokens,
        )
    except MissingToken:
        return None


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
        protect: require a valid token on every non-public path (default);
            ``False`` verifies tokens when present and lets the app decide.
        public_paths / public_prefixes: never checked.
        public_cache_policy: see :mod:`tokenguard.response`.
    """

    def __init__(
        self,
        app: WSGIApplication,
        guard: TokenGuard,
        *,
        protect: bool = True,
        public_paths: Iterable[str] = ("/health", "/healthz"),
        public_prefixes: Iterable[str] = (),
        public_cache_policy: PublicCachePolicy = "private",
    ) -> None:
        self.app = app
        self.guard = guard
        self.protect = protect
        self.policy = ResponsePolicy(
            public_paths=public_paths, public_prefixes=public_prefixes, public_cache_policy=public_cache_policy
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ, shallow=not self.guard.allow_form_token)
        path = request.path
        metadata = metadata_for_path(self.guard, request.method, path)
        if metadata is not None:
            # RFC 9728 §3: the protected-resource metadata document, public.
            body = json.dumps(metadata[1]).encode()
            start_response("200 OK", [*metadata[2], ("Content-Type", "application/json")])
            return [body]
        if self.policy.is_public(path):
            environ[CLAIMS_KEY] = None
            return self.app(environ, start_response)
        claims: TokenClaims | None = None
        try:
            if is_sender_constrained(self.guard):
                # DPoP / mTLS: judged with the whole request (request_auth.py).
                verdict = verify_wsgi(self.guard, environ, request.args.getlist("access_token"))
                claims = verdict.claims if verdict is not None else None
                if claims is None and self.protect:
                    raise MissingToken()
            else:
                token = find_token(self.guard, request)
                if token is not None:
                    claims = self.guard.verify_sync(token, client=request.remote_addr)
                elif self.protect:
                    raise MissingToken()
        except TokenError as error:
            status, headers, body = error_wsgi_response(self.guard, error)
            start_response(status, headers)
            return [body]
        environ[CLAIMS_KEY] = claims
        if claims is None:
            return self.app(environ, start_response)

        return self.app(environ, secure_start_response(start_response, self.policy, path, environ.get(VERDICT_KEY)))
