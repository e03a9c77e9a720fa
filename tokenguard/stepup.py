"""Step-up authentication (RFC 9470): a route demands how and how recently the user authenticated.

No I/O, no framework imports, no clock reads. A route requiring
``acr_values`` accepts only tokens whose ``acr`` is one of them; one requiring
``max_age`` only tokens whose ``auth_time`` is at most that many seconds old.
Anything else is 401 ``insufficient_user_authentication`` with ``acr_values``
and/or ``max_age`` in the challenge, so the client can send the user back to
the authorization server with the same parameters (RFC 9470 §3-4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .challenge import Challenge
from .claims import TokenClaims, numeric_date
from .errors import ConfigurationError, TokenError

__all__ = ["InsufficientUserAuthentication", "StepUpRequirement"]

#: Seconds ``auth_time`` may lie ahead of our clock (the authorization server's skew).
AUTH_TIME_LEEWAY = 60.0


class InsufficientUserAuthentication(TokenError):
    """401 ``insufficient_user_authentication`` (RFC 9470 §3): authenticate the user again.

    Args:
        acr_values: the acceptable authentication context classes, in order of preference.
        max_age: the largest acceptable age of the authentication, in seconds.
    """

    status_code = 401
    error_code = "insufficient_user_authentication"
    generic_description = "a different authentication level is required"

    def __init__(self, acr_values: Sequence[str] = (), max_age: int | None = None, description: str = "") -> None:
        super().__init__(description)
        self.acr_values = tuple(acr_values)
        self.max_age = max_age

    def challenge(
        self,
        realm: str | None = None,
        *,
        include_description: bool = True,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Challenge | None:
        # RFC 9470 §3: acr_values (space-separated) and max_age as auth-params.
        params: list[tuple[str, str]] = []
        if self.acr_values:
            params.append(("acr_values", " ".join(self.acr_values)))
        if self.max_age is not None:
            params.append(("max_age", str(self.max_age)))
        return super().challenge(realm, include_description=include_description, extra=(*params, *extra))


@dataclass(frozen=True, slots=True)
class StepUpRequirement:
    """A route's authentication-strength requirement.

    Args:
        acr_values: acceptable ``acr`` values; empty for no ``acr`` condition.
        max_age: seconds since ``auth_time`` allowed; ``None`` for no limit.

    Raises:
        ConfigurationError: a bare string for ``acr_values``, an empty or
            spaced value, or a negative ``max_age``.
    """

    acr_values: tuple[str, ...] = ()
    max_age: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.acr_values, str):
            raise ConfigurationError('acr_values must be a sequence, e.g. ["urn:example:mfa"], not a string')
        values = tuple(self.acr_values)
        for value in values:
            if not isinstance(value, str) or not value or " " in value or '"' in value or "\\" in value:
                raise ConfigurationError(f"acr_values: {value!r} is not a valid acr value")
        object.__setattr__(self, "acr_values", values)
        if self.max_age is not None and (
            isinstance(self.max_age, bool) or not isinstance(self.max_age, int) or self.max_age < 0
        ):
            raise ConfigurationError("max_age must be a non-negative whole number of seconds")

    @property
    def active(self) -> bool:
        """Whether this requirement checks anything."""
        return bool(self.acr_values) or self.max_age is not None

    def check(self, claims: TokenClaims, now: float) -> None:
        """Accept ``claims`` or raise.

        Raises:
            InsufficientUserAuthentication: the token's ``acr`` is not acceptable,
                or its ``auth_time`` is missing or too old.
        """
        if self.acr_values:
            acr = claims.get("acr")
            if not isinstance(acr, str) or acr not in self.acr_values:
                raise InsufficientUserAuthentication(
                    self.acr_values, self.max_age, "a different authentication level is required"
                )
        if self.max_age is not None:
            auth_time = numeric_date(claims.get("auth_time"))
            # RFC 9470 §6: without auth_time the age cannot be judged: ask again.
            # One ahead of the clock (beyond skew) would stay "fresh" until the
            # clock caught up: it proves nothing either.
            if auth_time is None or now - auth_time > self.max_age or auth_time > now + AUTH_TIME_LEEWAY:
                raise InsufficientUserAuthentication(
                    self.acr_values, self.max_age, "more recent authentication is required"
                )
