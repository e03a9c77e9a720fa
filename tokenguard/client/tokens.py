"""Tokens we *send*: parsing token-endpoint answers and deciding when to refresh.

No I/O, no framework imports, no clock reads: callers pass ``now``.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import jwt as pyjwt

from .. import diagnostics
from ..cachecontrol import CacheControl

__all__ = [
    "AccessToken",
    "InvalidClient",
    "InvalidGrant",
    "NoStorePolicy",
    "TokenEndpointError",
    "TokenEndpointUnreachable",
    "client_assertion",
    "parse_token_response",
]

logger = logging.getLogger("tokenguard.client")

NoStorePolicy = Literal["warn", "refuse", "ignore"]


class TokenEndpointError(Exception):
    """The token endpoint refused or answered something unusable.

    ``error`` and ``error_description`` are the server's (RFC 6749 §5.2) when
    it sent them; ``status`` is the HTTP status.
    """

    def __init__(self, error: str, description: str = "", *, status: int = 0) -> None:
        super().__init__(f"{error}: {description}" if description else error)
        self.error = error
        self.error_description = description
        self.status = status

    @classmethod
    def from_answer(cls, status: int, body: bytes) -> TokenEndpointError:
        """The most specific error for an RFC 6749 §5.2 error answer."""
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            document = None
        if not isinstance(document, dict) or not isinstance(document.get("error"), str):
            return cls("server_error", f"token endpoint answered HTTP {status}", status=status)
        error = document["error"]
        description = document.get("error_description")
        description = description if isinstance(description, str) else ""
        kind = {"invalid_client": InvalidClient, "invalid_grant": InvalidGrant}.get(error, cls)
        return kind(error, description, status=status)


class TokenEndpointUnreachable(TokenEndpointError):
    """The token endpoint (or the issuer's metadata) could not be reached.

    ``__cause__`` is the transport error. Nothing is wrong with the
    credentials: retry later.
    """

    def __init__(self, description: str) -> None:
        super().__init__("unreachable", description)


class InvalidClient(TokenEndpointError):
    """``invalid_client``: our credentials were refused; retrying will not help."""


class InvalidGrant(TokenEndpointError):
    """``invalid_grant``: e.g. an expired or revoked refresh token."""


@dataclass(frozen=True, slots=True)
class AccessToken:
    """An access token we hold, with when it expires and when it was obtained (seconds since the epoch)."""

    access_token: str = field(repr=False)
    token_type: str
    expires_at: float | None
    refresh_token: str | None = field(default=None, repr=False)
    scope: str | None = None
    id_token: str | None = field(default=None, repr=False)
    obtained_at: float | None = None

    def needs_refresh(self, now: float, margin: float) -> bool:
        """Whether to get a new token before using this one (``margin`` seconds early).

        The margin is at most half the token's lifetime: a token living
        20 s with the default 30 s margin would otherwise need refreshing
        the moment it arrives, and every request would cost a token request.
        """
        if self.expires_at is None:
            return False
        if self.obtained_at is not None:
            margin = min(margin, max(self.expires_at - self.obtained_at, 0.0) / 2)
        return now >= self.expires_at - margin


def parse_token_response(
    status: int,
    headers: dict[str, str],
    body: bytes,
    now: float,
    *,
    no_store: NoStorePolicy = "warn",
    endpoint: str = "token endpoint",
) -> AccessToken:
    """Check and read a token endpoint's answer (RFC 6749 §5.1).

    ``endpoint`` (the URL) is named in the ERROR record logged when the
    endpoint refuses this client's credentials (401/403).

    Raises:
        TokenEndpointError: non-200 (with the server's error), not a JSON
            object, no ``access_token``, ``token_type`` not Bearer,
            ``expires_in`` not a number, or no ``Cache-Control: no-store``
            or no ``Pragma: no-cache`` under the ``"refuse"`` policy.
    """
    if status != 200:
        if status in (401, 403):  # RFC 6749 §5.2 invalid_client: our credentials' fault, not the server's
            diagnostics.client_auth_failed("token", endpoint, status)
        raise TokenEndpointError.from_answer(status, body)
    try:
        document: Any = json.loads(body)
    except (ValueError, RecursionError):
        raise TokenEndpointError("invalid_response", "token answer is not JSON", status=status) from None
    if not isinstance(document, dict):
        raise TokenEndpointError("invalid_response", "token answer is not a JSON object", status=status)
    missing = _missing_cache_headers(headers) if no_store != "ignore" else ()
    if missing:
        # RFC 6749 §5.1: the answer MUST carry "Cache-Control: no-store" and "Pragma: no-cache".
        lacking = " and ".join(missing)
        if no_store == "refuse":
            raise TokenEndpointError("invalid_response", f"token answer lacks {lacking}")
        logger.warning("token endpoint answer lacks %s (RFC 6749 §5.1)", lacking)
    access_token = document.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise TokenEndpointError("invalid_response", "no access_token in the answer", status=status)
    token_type = document.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise TokenEndpointError("invalid_response", "token_type is not Bearer", status=status)
    expires_in = document.get("expires_in")
    expires_at = None
    if expires_in is not None:
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or not math.isfinite(expires_in):
            raise TokenEndpointError("invalid_response", "expires_in is not a number", status=status)
        expires_at = now + float(expires_in)
    refresh_token = document.get("refresh_token")
    scope = document.get("scope")
    id_token = document.get("id_token")
    return AccessToken(
        access_token=access_token,
        token_type="Bearer",
        expires_at=expires_at,
        refresh_token=refresh_token if isinstance(refresh_token, str) else None,
        scope=scope if isinstance(scope, str) else None,
        id_token=id_token if isinstance(id_token, str) else None,
        obtained_at=now,
    )


def _missing_cache_headers(headers: dict[str, str]) -> tuple[str, ...]:
    """Which of RFC 6749 §5.1's two caching headers the answer lacks."""
    missing: list[str] = []
    if not CacheControl.from_header(headers.get("cache-control")).no_store:
        missing.append("Cache-Control: no-store")
    # Pragma is a list of directives (RFC 9111 §5.4); "no-cache" must be one of them.
    pragma = {part.strip().lower() for part in (headers.get("pragma") or "").split(",")}
    if "no-cache" not in pragma:
        missing.append("Pragma: no-cache")
    return tuple(missing)


def client_assertion(client_id: str, audience: str, private_key: Any, now: float, *, algorithm: str = "RS256") -> str:
    """A ``private_key_jwt`` client assertion (RFC 7523 §3, OIDC Core §9)."""
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": uuid.uuid4().hex,
        "iat": int(now),
        "exp": int(now) + 60,
    }
    return pyjwt.encode(claims, private_key, algorithm=algorithm)
