"""Errors are data: each failure knows its HTTP answer.

No I/O, no framework imports, no clock reads.

::

    TokenError               request-time; knows HTTP status, RFC 6750 code, challenge params
    ├── MissingToken         401, challenge without an error code (RFC 6750 §3.1)
    ├── InvalidRequest       400 invalid_request
    ├── InvalidToken         401 invalid_token (expired, bad signature, wrong aud, inactive…)
    ├── InsufficientScope    403 insufficient_scope, scope="…"
    └── ServiceUnavailable   503 + Retry-After: the issuer is down, the token is not at fault
    ConfigurationError(ValueError)   raised at construction, never rendered as a response

Adapters never decide a status or a challenge: they call :meth:`TokenError.headers`
and :meth:`TokenError.body` and render what they get. Descriptions are short,
fixed phrases chosen by tokenguard; they never contain a token, a secret or
text copied from a token.
"""

from __future__ import annotations

from typing import ClassVar

from .challenge import Challenge

__all__ = [
    "ConfigurationError",
    "InsufficientScope",
    "InvalidRequest",
    "InvalidToken",
    "MissingToken",
    "ServiceUnavailable",
    "TokenError",
]

# Sent on every challenge: a 401/403 must never be served from a shared cache
# to another client (RFC 9111 §5.2.2.5; RFC 6750 §5.3 on token leakage).
NO_STORE_HEADERS: tuple[tuple[str, str], ...] = (
    ("Cache-Control", "no-store"),
    ("Pragma", "no-cache"),
)


class TokenError(Exception):
    """Base of every request-time failure.

    Subclasses set ``status_code`` and ``error_code``. Catch ``TokenError`` in
    custom integrations and answer with ``status_code``, :meth:`headers` and
    :meth:`body`.
    """

    status_code: ClassVar[int] = 401
    error_code: ClassVar[str | None] = None
    #: The phrase used when error details are suppressed (``include_error_details=False``).
    generic_description: ClassVar[str] = ""
    #: The auth scheme the request used (``Bearer`` or ``DPoP``): the error is
    #: rendered on that scheme's challenge (RFC 9449 §7.2).
    auth_scheme: str = "Bearer"

    def __init__(self, description: str = "") -> None:
        super().__init__(description or self.generic_description)
        self.description = description or self.generic_description

    def challenge(
        self,
        realm: str | None = None,
        *,
        include_description: bool = True,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Challenge | None:
        """The ``Bearer`` challenge for this error, or ``None`` when none applies."""
        return Challenge(
            realm=realm,
            error=self.error_code,
            error_description=self._description(include_description) or None,
            scope=self._challenge_scope(),
            extra=extra,
        )

    def headers(
        self,
        realm: str | None = None,
        *,
        include_description: bool = True,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> list[tuple[str, str]]:
        """All response headers for this error: challenge, no-store, and so on."""
        headers = list(NO_STORE_HEADERS)
        challenge = self.challenge(realm, include_description=include_description, extra=extra)
        if challenge is not None:
            headers.append(("WWW-Authenticate", challenge.to_header()))
        return headers

    def body(self, *, include_description: bool = True) -> dict[str, str]:
        """The JSON error body: ``{"error": ..., "error_description": ...}``."""
        body: dict[str, str] = {}
        if self.error_code is not None:
            body["error"] = self.error_code
        description = self._description(include_description)
        if description:
            body["error_description"] = description
        return body

    def _description(self, include: bool) -> str:
        return self.description if include else self.generic_description

    def _challenge_scope(self) -> tuple[str, ...]:
        return ()


class MissingToken(TokenError):
    """The request carried no credentials: 401 with a bare challenge.

    RFC 6750 §3.1: "If the request lacks any authentication information ...
    the resource server SHOULD NOT include an error code or other error
    information."
    """

    status_code = 401
    error_code = None
    generic_description = ""

    def body(self, *, include_description: bool = True) -> dict[str, str]:
        return {"error": "unauthorized", "error_description": "authentication required"}

    def _description(self, include: bool) -> str:
        return ""


class InvalidRequest(TokenError):
    """400 ``invalid_request``: malformed header, two tokens, disallowed method."""

    status_code = 400
    error_code = "invalid_request"
    generic_description = "invalid request"


class InvalidToken(TokenError):
    """401 ``invalid_token``: expired, forged, not for us, inactive or revoked.

    The client should obtain a new token; retrying with this one cannot succeed.
    """

    status_code = 401
    error_code = "invalid_token"
    generic_description = "invalid token"


class InsufficientScope(TokenError):
    """403 ``insufficient_scope``: a good token without the scopes the route needs.

    Args:
        scopes: the scopes the route requires; sent as ``scope="…"``.
        any_of: ``True`` when any one of ``scopes`` would have sufficed.
    """

    status_code = 403
    error_code = "insufficient_scope"
    generic_description = "insufficient scope"

    def __init__(self, scopes: tuple[str, ...] = (), description: str = "", *, any_of: bool = False) -> None:
        self.scopes = tuple(scopes)
        self.any_of = any_of
        if not description:
            description = (
                "the token lacks the scope this resource requires"
                if len(self.scopes) <= 1
                else ("one of the listed scopes is required" if any_of else "all listed scopes are required")
            )
        super().__init__(description)

    def _challenge_scope(self) -> tuple[str, ...]:
        return self.scopes


class ServiceUnavailable(TokenError):
    """503: the authorization server, JWKS or introspection endpoint failed.

    Not the token's fault: answering 401 would make clients throw away good
    tokens, and answering 200 would fail open. Clients should retry after
    ``retry_after`` seconds.
    """

    status_code = 503
    error_code = "temporarily_unavailable"
    generic_description = "the authorization server is unavailable"

    def __init__(self, description: str = "", *, retry_after: int = 5, reason: str = "unavailable") -> None:
        super().__init__(description)
        self.retry_after = max(1, int(retry_after))
        #: A short, fixed label for metrics and logs: ``timeout``, ``transport``,
        #: ``http_5xx``, ``circuit_open``, ``overloaded``, ``rate_limited``...
        self.reason = reason

    def challenge(
        self,
        realm: str | None = None,
        *,
        include_description: bool = True,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Challenge | None:
        # Not an authentication challenge: a WWW-Authenticate here would tell
        # clients their credentials are at fault.
        return None

    def headers(
        self,
        realm: str | None = None,
        *,
        include_description: bool = True,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> list[tuple[str, str]]:
        return [*NO_STORE_HEADERS, ("Retry-After", str(self.retry_after))]


class ConfigurationError(ValueError):
    """The guard was configured in a way that cannot be safe or cannot work.

    Raised at construction (or on the first fetch of a misconfigured issuer's
    metadata), never rendered as an HTTP response.
    """
