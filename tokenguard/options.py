"""``AdapterOptions``: what every front door (ASGI, WSGI, Flask) decides the same way.

No I/O, no framework imports. The Starlette middleware, the WSGI middleware
and the Flask extension each take one :class:`AdapterOptions` (or the same
keywords) with the same defaults, so a route is protected or public, and a
token is found or refused, identically whichever adapter serves it.

Public paths are the edge's most dangerous knob, so:

* nothing is public unless the application names it (no default list:
  ``/docs`` may be a protected route in a plain Starlette app);
* a bare string is refused (``public_paths=("/health")`` is a ``str``, and
  iterating it once made ``/`` public);
* prefixes match whole path segments: ``/static`` covers ``/static`` and
  ``/static/app.css``, never ``/staticfiles-admin``;
* a path with a dot-segment (``.`` or ``..``, RFC 3986 §3.3, also written
  ``%2e``) is never public: the application may resolve ``/static/../admin``
  to ``/admin``, or route it to a ``{path:path}`` parameter, so no spelling of
  it can be trusted to name what the application will serve;
* paths are compared relative to where the application is mounted (ASGI
  ``root_path``, WSGI ``SCRIPT_NAME``), as the application's own routes are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_args

from ._config import string_tuple
from .bearer import extract_token
from .errors import ConfigurationError
from .response import PublicCachePolicy

if TYPE_CHECKING:
    from ._guardlike import GuardLike as TokenGuard

__all__ = ["AdapterOptions", "has_dot_segment", "is_cors_preflight", "path_in_app", "resolve_options"]


def has_dot_segment(path: str) -> bool:
    """Whether ``path`` has a ``.`` or ``..`` segment (RFC 3986 §3.3), literally or as ``%2e``."""
    if "." not in path and "%" not in path:
        return False
    for segment in path.split("/"):
        if segment.replace("%2e", ".").replace("%2E", ".") in (".", ".."):
            return True
    return False


def path_in_app(path: str, root_path: str) -> str:
    """``path`` relative to the mount point ``root_path`` (a mounted ASGI app sees the full path).

    Starlette's ``Mount`` and servers run with a root path pass the full path
    in ``scope["path"]`` and the mount point in ``scope["root_path"]``; the
    application's routes, and so its public paths, are relative to the mount.
    """
    if root_path and root_path != "/":
        root = root_path.rstrip("/")
        if path == root:
            return "/"
        if path.startswith(root + "/"):
            return path[len(root) :]
    return path


def _checked_paths(value: object, option: str) -> tuple[str, ...]:
    paths = string_tuple(value, option)
    for path in paths:
        if not path.startswith("/"):
            raise ConfigurationError(f"{option} entries must start with '/'; got {path!r}")
        if has_dot_segment(path):
            raise ConfigurationError(f"{option} entries must not contain '.' or '..' segments; got {path!r}")
    return paths


@dataclass(frozen=True, slots=True, init=False)
class AdapterOptions:
    """Options shared by :class:`~tokenguard.starlette.TokenGuardMiddleware`,
    :class:`~tokenguard.wsgi.TokenGuardWSGIMiddleware` and
    :class:`~tokenguard.flask.FlaskTokenGuard`, with the same defaults in each.

    Args:
        protect: ``True`` (default) requires a valid token on every path that
            is not public; ``False`` verifies a token when one is sent and
            leaves the decision to per-route requirements.
        public_paths: exact paths served without any token check, relative to
            where the application is mounted. Default: none.
        public_prefixes: path prefixes served without any token check, matched
            by whole segments (``"/static"`` covers ``/static/a.css``, not
            ``/staticfiles``). Default: none.
        public_docs: on a FastAPI application, its own ``docs_url``,
            ``redoc_url``, ``openapi_url`` and ``swagger_ui_oauth2_redirect_url``
            are public to ``GET``/``HEAD`` (the methods FastAPI serves them
            with), read from the application on each request (so
            ``FastAPI(docs_url=None)`` publishes nothing). Has no effect on any
            other application. Default ``True``.
        allow_query_token / allow_form_token: accept ``access_token`` in the
            query string or form body (RFC 6750 §2.2/2.3); ``None`` (default)
            uses the guard's setting. Tokens in URLs leak through access logs
            and ``Referer`` headers (RFC 6750 §5.3).
        public_cache_policy: what to do with ``Cache-Control: public`` on an
            authenticated response (see :mod:`tokenguard.response`).
        cors_preflight: pass CORS preflight requests (``OPTIONS`` with
            ``Origin`` and ``Access-Control-Request-Method``, and no
            credentials: browsers never send any on a preflight) to the
            application without a token, for a CORS layer *inside* this one
            to answer (Flask-CORS under :class:`~tokenguard.flask.FlaskTokenGuard`).
            Default ``False``: a CORS middleware *outside* answers preflights
            itself and needs nothing here, while an application that answers
            every method alike (a plain WSGI app, a Django function view)
            would serve a preflight its content.

    Raises:
        ConfigurationError: a bare string for ``public_paths`` or
            ``public_prefixes``, an entry not starting with ``/`` or holding a
            dot-segment, a non-boolean flag, or an unknown cache policy.
    """

    protect: bool
    public_paths: frozenset[str]
    public_prefixes: tuple[str, ...]
    public_docs: bool
    allow_query_token: bool | None
    allow_form_token: bool | None
    public_cache_policy: PublicCachePolicy
    cors_preflight: bool

    def __init__(
        self,
        *,
        protect: bool = True,
        public_paths: Sequence[str] = (),
        public_prefixes: Sequence[str] = (),
        public_docs: bool = True,
        allow_query_token: bool | None = None,
        allow_form_token: bool | None = None,
        public_cache_policy: PublicCachePolicy = "private",
        cors_preflight: bool = False,
    ) -> None:
        for name, flag in (("protect", protect), ("public_docs", public_docs), ("cors_preflight", cors_preflight)):
            if not isinstance(flag, bool):
                raise ConfigurationError(f"{name} must be True or False, not {flag!r}")
        for name, maybe in (("allow_query_token", allow_query_token), ("allow_form_token", allow_form_token)):
            if maybe is not None and not isinstance(maybe, bool):
                raise ConfigurationError(f"{name} must be True, False or None, not {maybe!r}")
        if public_cache_policy not in get_args(PublicCachePolicy):
            raise ConfigurationError(
                f"public_cache_policy must be one of {list(get_args(PublicCachePolicy))}, not {public_cache_policy!r}"
            )
        prefixes = tuple(p.rstrip("/") or "/" for p in _checked_paths(public_prefixes, "public_prefixes"))
        set_field = object.__setattr__
        set_field(self, "protect", protect)
        set_field(self, "public_paths", frozenset(_checked_paths(public_paths, "public_paths")))
        set_field(self, "public_prefixes", prefixes)
        set_field(self, "public_docs", public_docs)
        set_field(self, "allow_query_token", allow_query_token)
        set_field(self, "allow_form_token", allow_form_token)
        set_field(self, "public_cache_policy", public_cache_policy)
        set_field(self, "cors_preflight", cors_preflight)

    def is_public(self, path: str, extra_public: frozenset[str] = frozenset()) -> bool:
        """Whether ``path`` (relative to the application's mount) is served without a token check.

        ``extra_public`` holds exact paths the application itself serves
        publicly (FastAPI's docs URLs, read from the app by the ASGI adapter).
        """
        if not (self.public_paths or self.public_prefixes or extra_public):
            return False
        if has_dot_segment(path):
            return False
        if path in self.public_paths or path in extra_public:
            return True
        for prefix in self.public_prefixes:
            # Whole segments only: "/static" is not a prefix of "/staticfiles".
            if prefix == "/" or path == prefix or path.startswith(prefix + "/"):
                return True
        return False

    def form_tokens_allowed(self, guard: TokenGuard) -> bool:
        """Whether form-body tokens are accepted (this object's setting, else the guard's)."""
        return guard.allow_form_token if self.allow_form_token is None else self.allow_form_token

    def extract(
        self,
        guard: TokenGuard,
        authorization: Sequence[str],
        query_tokens: Sequence[str] = (),
        form_tokens: Sequence[str] = (),
    ) -> str:
        """The request's one Bearer token, with these options over the guard's settings.

        Raises:
            MissingToken: no credentials; InvalidRequest: malformed, several,
                or in a place not allowed; InvalidToken: over the size limit.
        """
        return extract_token(
            authorization,
            query_tokens,
            form_tokens,
            allow_query=guard.allow_query_token if self.allow_query_token is None else self.allow_query_token,
            allow_form=self.form_tokens_allowed(guard),
            max_token_bytes=guard.max_token_bytes,
        )


def is_cors_preflight(method: str, header: Callable[[str], str | None]) -> bool:
    """Whether a request is a CORS preflight (Fetch standard): ``OPTIONS`` with
    ``Origin`` and ``Access-Control-Request-Method``; ``header`` reads one request header by lower-case name."""
    return method == "OPTIONS" and bool(header("origin")) and bool(header("access-control-request-method"))


def resolve_options(options: AdapterOptions | None, keywords: Mapping[str, Any]) -> AdapterOptions:
    """``options``, or one built from the adapter keywords that are not ``None``.

    Raises:
        ConfigurationError: both ``options`` and keywords were given, or a value is invalid.
    """
    given = {name: value for name, value in keywords.items() if value is not None}
    if options is not None:
        if given:
            raise ConfigurationError(f"pass options= or {', '.join(sorted(given))}, not both")
        return options
    return AdapterOptions(**given)
