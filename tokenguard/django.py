"""Django: a middleware and a view decorator (Django REST framework: :mod:`tokenguard.rest_framework`).

::

    # settings.py
    TOKENGUARD = {
        "ISSUER": "https://idp.example.com/oidc",
        "AUDIENCE": "https://api.example.com",
        "CLIENT_ID": "my-api", "CLIENT_SECRET": "...",   # optional: introspection
    }
    # or TOKENGUARD_GUARD = "myproject.auth.guard"     (a TokenGuard, or a callable returning one)
    MIDDLEWARE = [..., "tokenguard.django.TokenGuardMiddleware"]
    TOKENGUARD_PUBLIC_PATHS = ["/health"]               # nothing is public unless named

    # views.py
    from tokenguard.django import requires

    @requires("books:read")
    def books(request):
        return JsonResponse({"user": request.tokenguard.subject})

Answers are those of every tokenguard adapter (README, "What a client gets back"): 401 with a bare
``Bearer`` challenge without credentials, 400 ``invalid_request``, 401
``invalid_token``, 403 ``insufficient_scope`` with ``scope="…"``, 503 with
``Retry-After``; JSON bodies, ``Cache-Control: no-store`` on every challenge;
``Vary: Authorization`` and (when the view set none) ``Cache-Control:
no-store`` on authenticated responses.

Verification is blocking (``verify_sync``); the guard is thread-safe, so
threaded WSGI servers share its caches. Under ASGI Django runs this
middleware in a thread, as it does any sync middleware.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse
from django.utils.module_loading import import_string

from .claims import TokenClaims
from .errors import ConfigurationError, MissingToken, TokenError
from .guard import TokenGuard
from .options import has_dot_segment, is_cors_preflight
from .request_auth import VERDICT_KEY, response_header_pairs, verify_wsgi
from .response import secure_headers
from .scopes import ScopeRequirement
from .sender_config import is_sender_constrained, metadata_for_path

if TYPE_CHECKING:
    from .response import PublicCachePolicy

__all__ = [
    "REQUEST_ATTRIBUTE",
    "PathRules",
    "TokenGuardMiddleware",
    "TokenUser",
    "claims_of",
    "error_response",
    "find_token",
    "get_guard",
    "requires",
    "secure_response",
    "verify_request_claims",
]

#: The attribute of the Django ``HttpRequest`` holding the verified claims (or ``None``).
REQUEST_ATTRIBUTE = "tokenguard"

F = TypeVar("F", bound=Callable[..., HttpResponse])

_guard: TokenGuard | None = None


def get_guard() -> TokenGuard:
    """The project's :class:`TokenGuard`, from the Django settings (built once).

    ``TOKENGUARD_GUARD`` names it: a :class:`TokenGuard`, a dotted path to one,
    or a dotted path to a function returning one. Otherwise the ``TOKENGUARD``
    dict builds it with :meth:`TokenGuard.from_issuer`: ``ISSUER`` and
    ``AUDIENCE`` (required; ``None`` skips the audience check on purpose),
    ``CLIENT_ID`` and ``CLIENT_SECRET`` (introspection), and any other
    ``from_issuer`` option in upper case (``REALM``, ``ALLOW_QUERY_TOKEN`` …).

    Raises:
        ConfigurationError: neither setting is usable; the message names it.
    """
    global _guard
    if _guard is None:
        _guard = _guard_from_settings()
    return _guard


def _guard_from_settings() -> TokenGuard:
    named = getattr(settings, "TOKENGUARD_GUARD", None)
    if named is not None:
        value: Any = named
        if isinstance(named, str):
            try:
                value = import_string(named)
            except ImportError as exc:
                raise ConfigurationError(f"TOKENGUARD_GUARD: cannot import {named!r}") from exc
        if not isinstance(value, TokenGuard) and callable(value):
            value = value()
        if not isinstance(value, TokenGuard):
            raise ConfigurationError(f"TOKENGUARD_GUARD must name a TokenGuard, got {type(value).__name__}")
        return value
    options = getattr(settings, "TOKENGUARD", None)
    if not isinstance(options, dict):
        raise ConfigurationError("set TOKENGUARD_GUARD or the TOKENGUARD dict (with ISSUER and AUDIENCE) in settings")
    if not options.get("ISSUER"):
        raise ConfigurationError('TOKENGUARD["ISSUER"] is required')
    if "AUDIENCE" not in options:
        raise ConfigurationError('TOKENGUARD["AUDIENCE"] is required (None skips the audience check on purpose)')
    keywords = {name.lower(): value for name, value in options.items() if name != "ISSUER"}
    try:
        return TokenGuard.from_issuer(options["ISSUER"], **keywords)
    except TypeError as exc:
        raise ConfigurationError(f"TOKENGUARD has an unknown option: {exc}") from exc


def _forget_guard(*, setting: str, **_: Any) -> None:
    # override_settings() in tests swaps the guard; never close a guard we did
    # not build from the TOKENGUARD dict.
    global _guard
    if setting in ("TOKENGUARD", "TOKENGUARD_GUARD"):
        _guard = None


setting_changed.connect(_forget_guard)


class TokenUser:
    """``request.user`` for a verified token (no database row).

    Django and DRF ask a user whether it is authenticated; this one is, as
    the token's subject (or, for client-credentials tokens, its client).
    Map tokens to your own user model by overriding
    :meth:`tokenguard.rest_framework.TokenAuthentication.get_user`.
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, claims: TokenClaims) -> None:
        self.claims = claims
        self.username = claims.subject or claims.client_id or ""

    @property
    def pk(self) -> str:
        """The subject, so per-user throttles and logs have a key."""
        return self.username

    id = pk

    def get_username(self) -> str:
        return self.username

    def __str__(self) -> str:
        return self.username

    def __repr__(self) -> str:
        return f"TokenUser({self.username!r})"


def claims_of(request: HttpRequest) -> TokenClaims | None:
    """The verified claims attached to ``request`` (middleware, decorator or DRF), if any."""
    claims = getattr(request, REQUEST_ATTRIBUTE, None)
    return claims if isinstance(claims, TokenClaims) else None


def find_token(guard: TokenGuard, request: HttpRequest) -> str | None:
    """The request's Bearer token, ``None`` when it carries none.

    Raises:
        InvalidRequest: malformed, duplicated or in a disallowed place.
        InvalidToken: over the size limit.
    """
    header = request.META.get("HTTP_AUTHORIZATION")
    authorization = [header] if isinstance(header, str) else []
    query, form = _parameter_tokens(guard, request)
    try:
        return guard.extract(authorization, query, form)
    except MissingToken:
        return None


def _parameter_tokens(guard: TokenGuard, request: HttpRequest) -> tuple[list[str], list[str]]:
    """The ``access_token`` values of the query string and (when allowed) of an urlencoded body."""
    form: list[str] = []
    if (
        guard.allow_form_token
        and request.method not in ("GET", "HEAD")
        and request.content_type == "application/x-www-form-urlencoded"
        and _declared_length(request) <= _MAX_FORM_BYTES
    ):
        form = request.POST.getlist("access_token")
    return request.GET.getlist("access_token"), form


#: As every adapter: only a body with a ``Content-Length`` of at most 64 KiB is searched for a form token.
_MAX_FORM_BYTES = 64 * 1024


def _declared_length(request: HttpRequest) -> int:
    """The declared body length; an unknown or invalid one counts as too long (never searched)."""
    value = request.META.get("CONTENT_LENGTH")
    return int(value) if isinstance(value, str) and value.isdigit() else _MAX_FORM_BYTES + 1


def verify_request_claims(guard: TokenGuard, request: HttpRequest) -> TokenClaims | None:
    """Verify the credentials of ``request``; ``None`` when it carries none.

    With DPoP or mTLS configured, the token is judged with its request
    (:mod:`tokenguard.request_auth`), as by every other adapter: such a guard
    admits ``cnf``-bound tokens in ``verify_sync``, so verifying the token
    alone would accept a stolen bound token sent as plain Bearer, without its
    proof (RFC 9449 §7.1, RFC 8705 §3).

    Raises:
        TokenError: credentials present but refused.
    """
    if is_sender_constrained(guard):
        query, form = _parameter_tokens(guard, request)
        verdict = verify_wsgi(guard, request.META, query, form)
        return verdict.claims if verdict is not None else None
    token = find_token(guard, request)
    if token is None:
        return None
    return guard.verify_sync(token, client=request.META.get("REMOTE_ADDR"))


def error_response(guard: TokenGuard, error: TokenError) -> HttpResponse:
    """The RFC 6750 response for ``error``: status, challenge, no-store, JSON body."""
    rendered = guard.error_response(error)
    response = HttpResponse(json.dumps(rendered.body), status=rendered.status_code, content_type="application/json")
    joined: dict[str, list[str]] = {}
    for name, value in rendered.headers:
        joined.setdefault(name, []).append(value)
    for name, values in joined.items():
        # RFC 9110 §11.6.1: several challenges may share one header, comma-separated.
        response[name] = ", ".join(values)
    return response


def secure_response(
    response: HttpResponse, policy: PublicCachePolicy = "private", request: HttpRequest | None = None
) -> HttpResponse:
    """Apply the authenticated-response rules: ``Vary: Authorization``, a safe ``Cache-Control``.

    With ``request``, also the headers its DPoP/mTLS verdict adds (a fresh
    ``DPoP-Nonce``, RFC 9449 §8.2), as the other adapters do.
    """
    current = [(name, response[name]) for name in ("Vary", "Cache-Control") if response.has_header(name)]
    secured, _ = secure_headers(current, public_policy=policy)
    for name, value in secured:
        response[name] = value
    if request is not None:
        for name, value in response_header_pairs(request.META.get(VERDICT_KEY)):
            response[name] = value
    return response


def _authenticate(guard: TokenGuard, request: HttpRequest) -> TokenClaims | None:
    claims = claims_of(request)
    if claims is not None:
        return claims
    claims = verify_request_claims(guard, request)
    if claims is not None:
        setattr(request, REQUEST_ATTRIBUTE, claims)
    return claims


class PathRules:
    """Which paths are public: exact paths and whole-segment prefixes.

    ``"/static"`` as a prefix exempts ``/static`` and ``/static/app.css``,
    not ``/staticfiles-admin``. A path with a ``.`` or ``..`` segment is
    never public (RFC 3986 §5.2.4 would move it elsewhere). Nothing is
    public unless named.

    Raises:
        ConfigurationError: a bare string where a list was expected, or a
            path that does not start with ``/``.
    """

    def __init__(self, public_paths: Iterable[str] = (), public_prefixes: Iterable[str] = ()) -> None:
        self.paths = frozenset(_path_list("TOKENGUARD_PUBLIC_PATHS", public_paths))
        self.prefixes = tuple(p.rstrip("/") for p in _path_list("TOKENGUARD_PUBLIC_PREFIXES", public_prefixes))

    def is_public(self, path: str) -> bool:
        """Whether ``path`` is served without a token check."""
        if has_dot_segment(path):
            # Also %2e: the same rule as the other adapters (tokenguard.options).
            return False
        if path in self.paths:
            return True
        return any(path == prefix or path.startswith(prefix + "/") for prefix in self.prefixes)


def _path_list(option: str, value: Iterable[str]) -> list[str]:
    if isinstance(value, str | bytes):
        raise ConfigurationError(f"{option} must be a list of paths, not the string {value!r}")
    paths = list(value)
    for path in paths:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigurationError(f"{option}: every entry must be a path starting with '/', got {path!r}")
        if has_dot_segment(path):
            # Never public at request time, so an entry holding one is a mistake (as in every adapter).
            raise ConfigurationError(f"{option}: entries must not contain '.' or '..' segments; got {path!r}")
    return paths


class TokenGuardMiddleware:
    """Verify the Bearer token of every request.

    Settings: ``TOKENGUARD_PROTECT`` (default ``True``: a valid token is
    required on every path that is not public; ``False``: a token is verified
    when sent, and views decide with :func:`requires`),
    ``TOKENGUARD_PUBLIC_PATHS`` and ``TOKENGUARD_PUBLIC_PREFIXES`` (default
    none), ``TOKENGUARD_PUBLIC_CACHE_POLICY`` (see :mod:`tokenguard.response`),
    ``TOKENGUARD_CORS_PREFLIGHT`` (default ``False``; see
    :class:`~tokenguard.options.AdapterOptions` ``cors_preflight``: with
    django-cors-headers placed above this middleware, as its documentation
    asks, preflights never reach it).

    The claims are at ``request.tokenguard``; ``request.user`` becomes a
    :class:`TokenUser` when no other middleware set an authenticated user.
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        protect = getattr(settings, "TOKENGUARD_PROTECT", True)
        if not isinstance(protect, bool):
            raise ConfigurationError(f"TOKENGUARD_PROTECT must be True or False, got {protect!r}")
        self.protect = protect
        cors_preflight = getattr(settings, "TOKENGUARD_CORS_PREFLIGHT", False)
        if not isinstance(cors_preflight, bool):
            raise ConfigurationError(f"TOKENGUARD_CORS_PREFLIGHT must be True or False, got {cors_preflight!r}")
        self.cors_preflight = cors_preflight
        self.rules = PathRules(
            getattr(settings, "TOKENGUARD_PUBLIC_PATHS", ()), getattr(settings, "TOKENGUARD_PUBLIC_PREFIXES", ())
        )
        policy = getattr(settings, "TOKENGUARD_PUBLIC_CACHE_POLICY", "private")
        if policy not in ("private", "keep", "no-store"):
            raise ConfigurationError(
                f"TOKENGUARD_PUBLIC_CACHE_POLICY must be private, keep or no-store, got {policy!r}"
            )
        self.policy = cast("PublicCachePolicy", policy)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        guard = get_guard()
        setattr(request, REQUEST_ATTRIBUTE, None)
        metadata = metadata_for_path(guard, request.method or "GET", request.path)
        if metadata is not None:
            # RFC 9728 §3: the protected-resource metadata document, public, as in
            # the other adapters (the challenges' resource_metadata points here).
            status, document, headers = metadata
            response = HttpResponse(json.dumps(document), status=status, content_type="application/json")
            for name, value in headers:
                response[name] = value
            return response
        if self.rules.is_public(request.path_info):
            return self.get_response(request)
        try:
            claims = _authenticate(guard, request)
            if (
                claims is None
                and self.protect
                and not (self.cors_preflight and is_cors_preflight(request.method or "", request.headers.get))
            ):
                raise MissingToken()
        except TokenError as error:
            return error_response(guard, error)
        if claims is None:
            return self.get_response(request)
        user = getattr(request, "user", None)
        if user is None or not getattr(user, "is_authenticated", False):
            request.user = TokenUser(claims)
        return secure_response(self.get_response(request), self.policy, request)


def requires(*scopes: str, any_of: bool = False, guard: TokenGuard | None = None) -> Callable[[F], F]:
    """Decorate a Django view (sync or ``async def``) with a token and scope check.

    Works with or without :class:`TokenGuardMiddleware` (without it the token
    is verified here). Failures are answered with the RFC 6750 response;
    a successful response gets the authenticated-response headers.

    Args:
        scopes: scopes the view needs (all of them, or any one with ``any_of``).
        guard: the guard; default :func:`get_guard` (from settings).

    Raises:
        ConfigurationError: a scope name is invalid, or a bare string was
            passed as ``scopes`` in a list's place (``requires(["a", "b"])``).
    """
    for scope in scopes:
        if not isinstance(scope, str):
            raise ConfigurationError(f"requires() takes scope names as arguments, got {scope!r}")
    requirement = ScopeRequirement(tuple(scopes), any_of)

    def refusal(request: HttpRequest) -> HttpResponse | None:
        active = guard or get_guard()
        try:
            claims = _authenticate(active, request)
            if claims is None:
                raise MissingToken()
            requirement.check(claims.scopes)
        except TokenError as error:
            return error_response(active, error)
        return None

    def decorator(view: F) -> F:
        if inspect.iscoroutinefunction(view):

            @functools.wraps(view)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
                # verify_sync in a worker thread: the guard's blocking client is
                # shared by every request, while an async client would be bound
                # to one event loop (Django may run each request in a new one).
                refused = await sync_to_async(refusal, thread_sensitive=False)(request)
                if refused is not None:
                    return refused
                return secure_response(await view(request, *args, **kwargs), request=request)

            return cast(F, async_wrapper)

        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            refused = refusal(request)
            if refused is not None:
                return refused
            return secure_response(view(request, *args, **kwargs), request=request)

        return cast(F, wrapper)

    return decorator
