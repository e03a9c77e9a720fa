"""Django REST framework: an authentication class, a scope permission, an exception handler.

::

    # settings.py (guard settings: see tokenguard.django)
    REST_FRAMEWORK = {
        "DEFAULT_AUTHENTICATION_CLASSES": ["tokenguard.rest_framework.TokenAuthentication"],
        "DEFAULT_PERMISSION_CLASSES": ["tokenguard.rest_framework.ScopePermission"],
        "EXCEPTION_HANDLER": "tokenguard.rest_framework.exception_handler",
    }

    class Books(APIView):
        required_scopes = ["books:read"]             # read by ScopePermission

        def get(self, request):
            return Response({"user": request.user.username, "scopes": sorted(request.auth.scopes)})

    # or per view: permission_classes = [scopes_required("books:read")]

``request.user`` is a :class:`~tokenguard.django.TokenUser` (override
:meth:`TokenAuthentication.get_user` to map to your user model) and
``request.auth`` the verified :class:`~tokenguard.TokenClaims`.

Failures answer as every tokenguard adapter does: 400 ``invalid_request``,
401 ``invalid_token`` (with the error in ``WWW-Authenticate``), 401 with a bare
``Bearer realm`` challenge without credentials (DRF asks
:meth:`TokenAuthentication.authenticate_header`), 403 ``insufficient_scope``
with ``scope="…"``, 503 with ``Retry-After``; the body is the RFC 6750 JSON
``{"error", "error_description"}``. DRF's default exception handler copies
only ``WWW-Authenticate`` and ``Retry-After``; :func:`exception_handler` adds
the rest (``Cache-Control: no-store``, ``Pragma: no-cache``), so set it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission

from .claims import TokenClaims
from .django import REQUEST_ATTRIBUTE, TokenUser, get_guard, verify_request_claims
from .errors import ConfigurationError, MissingToken, TokenError
from .guard import TokenGuard
from .scopes import ScopeRequirement

if TYPE_CHECKING:
    from rest_framework.request import Request
    from rest_framework.response import Response

__all__ = ["ScopePermission", "TokenAuthentication", "TokenGuardAPIException", "exception_handler", "scopes_required"]


class TokenGuardAPIException(exceptions.APIException):
    """A :class:`TokenError` as DRF raises it: the guard's status, body and headers.

    Not a subclass of DRF's ``AuthenticationFailed``, whose handling would
    replace the challenge by the bare one from ``authenticate_header``.
    """

    def __init__(self, guard: TokenGuard, error: TokenError) -> None:
        rendered = guard.error_response(error)
        super().__init__(detail=rendered.body, code=error.error_code)
        self.status_code = rendered.status_code
        self.error = error
        #: Every header of the guard's answer, applied by :func:`exception_handler`.
        self.headers = list(rendered.headers)
        challenges = [value for name, value in rendered.headers if name.lower() == "www-authenticate"]
        # Read by DRF's default exception handler too.
        self.auth_header = ", ".join(challenges) or None
        retry = next((value for name, value in rendered.headers if name.lower() == "retry-after"), None)
        self.wait = int(retry) if retry is not None and retry.isdigit() else None


class TokenAuthentication(BaseAuthentication):
    """Authenticate DRF requests by their Bearer token.

    No token: ``None``, so another authentication class may try and DRF
    answers 401 with :meth:`authenticate_header` when the view needs a user.
    A bad token: :class:`TokenGuardAPIException` (401 ``invalid_token``,
    400, or 503).

    Set ``guard`` on a subclass to use another guard than the settings' one.
    """

    guard: TokenGuard | None = None

    def get_guard(self) -> TokenGuard:
        """The guard: the class attribute, else :func:`tokenguard.django.get_guard`."""
        return self.guard if self.guard is not None else get_guard()

    def authenticate(self, request: Request) -> tuple[Any, TokenClaims] | None:
        guard = self.get_guard()
        django_request = request._request
        claims = getattr(django_request, REQUEST_ATTRIBUTE, None)
        if not isinstance(claims, TokenClaims):
            try:
                # DPoP / mTLS guards judge the token with its request (see verify_request_claims).
                claims = verify_request_claims(guard, django_request)
                if claims is None:
                    return None
            except TokenError as error:
                raise TokenGuardAPIException(guard, error) from error
            # The Django middleware (if installed) secures the response headers.
            setattr(django_request, REQUEST_ATTRIBUTE, claims)
        return self.get_user(claims), claims

    def get_user(self, claims: TokenClaims) -> Any:
        """``request.user`` for ``claims``; override to map to your user model."""
        return TokenUser(claims)

    def authenticate_header(self, request: Request) -> str:
        """The bare challenge (RFC 6750 §3.1: no error code without credentials)."""
        guard = self.get_guard()
        return TokenGuardAPIException(guard, MissingToken()).auth_header or "Bearer"


class ScopePermission(BasePermission):
    """Require a verified token with the view's scopes.

    The scopes come from the view's ``required_scopes`` (a list; all needed)
    or ``required_scopes_any_of`` (any one), or from :func:`scopes_required`.
    A request without a token is answered 401 with the bare challenge; a
    token without the scopes 403 ``insufficient_scope`` naming them.
    """

    scopes: tuple[str, ...] | None = None
    any_of: bool = False
    guard: TokenGuard | None = None

    def has_permission(self, request: Request, view: Any) -> bool:
        guard = self.guard if self.guard is not None else get_guard()
        requirement = self.requirement(view)
        claims = request.auth
        if not isinstance(claims, TokenClaims):
            raise TokenGuardAPIException(guard, MissingToken())
        try:
            requirement.check(claims.scopes)
        except TokenError as error:
            raise TokenGuardAPIException(guard, error) from error
        return True

    def requirement(self, view: Any) -> ScopeRequirement:
        """The scope requirement for ``view``.

        Raises:
            ConfigurationError: ``required_scopes`` is a bare string.
        """
        if self.scopes is not None:
            return ScopeRequirement(self.scopes, self.any_of)
        for attribute, any_of in (("required_scopes", False), ("required_scopes_any_of", True)):
            value = getattr(view, attribute, None)
            if value is not None:
                return ScopeRequirement(_scope_list(f"{type(view).__name__}.{attribute}", value), any_of)
        return ScopeRequirement(())


def _scope_list(option: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence | set | frozenset):
        raise ConfigurationError(f"{option} must be a list of scope names, got {value!r}")
    return tuple(value)


def scopes_required(*scopes: str, any_of: bool = False) -> type[ScopePermission]:
    """A :class:`ScopePermission` class for ``scopes``: ``permission_classes = [scopes_required("read")]``.

    Raises:
        ConfigurationError: an invalid scope name.
    """
    requirement = ScopeRequirement(_scope_list("scopes_required()", scopes), any_of)
    return type(
        "ScopesRequired",
        (ScopePermission,),
        {"scopes": requirement.scopes, "any_of": any_of, "__doc__": f"Requires {requirement.scopes!r}."},
    )


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's exception handler, plus every header of tokenguard's answers.

    Set ``REST_FRAMEWORK["EXCEPTION_HANDLER"] = "tokenguard.rest_framework.exception_handler"``.
    """
    # Imported here: rest_framework.views imports the configured authentication
    # classes (this module) while it loads.
    from rest_framework.views import exception_handler as drf_exception_handler

    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, TokenGuardAPIException):
        joined: dict[str, list[str]] = {}
        for name, value in exc.headers:
            joined.setdefault(name, []).append(value)
        for name, values in joined.items():
            response[name] = ", ".join(values)
    return response
