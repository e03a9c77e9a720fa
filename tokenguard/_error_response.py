"""What a refused request is answered: status, challenge headers and a JSON body.

No I/O, no framework imports, no clock reads. Each error already knows its
HTTP answer (``errors.py``); this module adds what the guard's settings change
in it: the ``realm``, whether ``error_description`` is sent, the RFC 9728
``resource_metadata`` parameter on 401 and 403 challenges and, with DPoP
enabled, ``Bearer`` and ``DPoP`` challenges side by side
(:func:`~tokenguard.request_auth.challenge_headers`). Adapters send an
:class:`ErrorResponse` as it is.
"""

from __future__ import annotations

from .dpop import DPoPSettings
from .errors import TokenError
from .request_auth import challenge_headers

__all__ = ["ErrorResponse", "render_error"]


class ErrorResponse:
    """Status, headers and JSON body for a failed request; adapters render it as is."""

    __slots__ = ("body", "headers", "status_code")

    def __init__(self, status_code: int, headers: list[tuple[str, str]], body: dict[str, str]) -> None:
        self.status_code = status_code
        self.headers = headers
        self.body = body


def render_error(
    error: TokenError,
    *,
    realm: str | None,
    include_description: bool,
    resource_metadata: str | None,
    dpop: DPoPSettings | None,
) -> ErrorResponse:
    """The answer to a request refused with ``error``, under a guard's settings."""
    extra: tuple[tuple[str, str], ...] = ()
    if resource_metadata and error.status_code in (401, 403):
        extra = (("resource_metadata", resource_metadata),)
    if dpop is not None and dpop.enabled:
        headers = challenge_headers(error, dpop, realm, include_description=include_description, extra=extra)
    else:
        headers = error.headers(realm, include_description=include_description, extra=extra)
    return ErrorResponse(error.status_code, headers, error.body(include_description=include_description))
