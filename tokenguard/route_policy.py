"""Per-route conditions beyond scopes: step-up (RFC 9470) and the route's DPoP mode.

No I/O, no framework imports. A :class:`RoutePolicy` is checked after the
token and its scopes, against the claims and the request's
:class:`~tokenguard.request_auth.RequestVerdict`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .claims import TokenClaims
from .dpop import _MODES, DPoPMode
from .errors import ConfigurationError, InvalidToken, TokenError
from .stepup import StepUpRequirement

if TYPE_CHECKING:
    from ._guardlike import GuardLike as TokenGuard
    from .request_auth import RequestVerdict

__all__ = ["RoutePolicy"]


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """Step-up and DPoP conditions of one route."""

    step_up: StepUpRequirement
    dpop: DPoPMode | None = None

    @classmethod
    def of(
        cls,
        guard: TokenGuard,
        *,
        acr_values: Sequence[str] = (),
        max_age: int | None = None,
        dpop: DPoPMode | None = None,
    ) -> RoutePolicy | None:
        """The policy for these options, or ``None`` when they ask for nothing.

        Raises:
            ConfigurationError: bad step-up values, an unknown DPoP mode, a
                DPoP mode other than ``"disabled"`` on a guard without DPoP, or
                a laxer mode than a guard's ``"required"``.
        """
        step_up = StepUpRequirement(acr_values, max_age)  # type: ignore[arg-type]  # converted in __post_init__
        if dpop is not None:
            if dpop not in _MODES:
                raise ConfigurationError(f"dpop must be one of {', '.join(_MODES)}; got {dpop!r}")
            if dpop != "disabled" and (guard.dpop is None or not guard.dpop.enabled):
                raise ConfigurationError(f"dpop={dpop!r} on a route needs DPoP enabled on the guard (dpop=...)")
            if dpop != "required" and guard.dpop is not None and guard.dpop.mode == "required":
                # The guard refuses Bearer before the route is known: the route could never be reached.
                raise ConfigurationError(f"dpop={dpop!r} on a route cannot relax the guard's dpop='required'")
        if not step_up.active and dpop is None:
            return None
        return cls(step_up, dpop)

    def check(self, claims: TokenClaims, verdict: RequestVerdict | None, now: float) -> None:
        """Accept the request or raise.

        Raises:
            InvalidToken: the route's DPoP mode refuses the scheme used.
            InsufficientUserAuthentication: step-up needed.
        """
        scheme = verdict.scheme if verdict is not None else "Bearer"
        if self.dpop == "required" and scheme != "DPoP":
            error = InvalidToken("this resource requires a DPoP-bound token")
            error.auth_scheme = "DPoP"
            raise error
        if self.dpop == "disabled" and scheme == "DPoP":
            error = InvalidToken("this resource does not accept DPoP")
            error.auth_scheme = "DPoP"
            raise error
        self.step_up.check(claims, now)


def route_policy(
    acr_values: Sequence[str] = (), max_age: int | None = None, dpop: DPoPMode | None = None
) -> RoutePolicy | None:
    """A policy for adapter decorators, built before the guard is known; ``None`` when it asks for nothing.

    Raises:
        ConfigurationError: bad step-up values or an unknown DPoP mode.
    """
    step_up = StepUpRequirement(acr_values, max_age)  # type: ignore[arg-type]  # converted in __post_init__
    if dpop is not None and dpop not in _MODES:
        raise ConfigurationError(f"dpop must be one of {', '.join(_MODES)}; got {dpop!r}")
    return RoutePolicy(step_up, dpop) if step_up.active or dpop is not None else None


def check_route(policy: RoutePolicy | None, claims: TokenClaims, verdict: RequestVerdict | None, now: float) -> None:
    """Check ``policy`` (if any); errors answer on the scheme the request used (RFC 9449 §7.2).

    Raises:
        TokenError: the route's step-up or DPoP condition is not met.
    """
    if policy is None:
        return
    try:
        policy.check(claims, verdict, now)
    except TokenError as error:
        raise on_scheme_used(error, verdict) from None


def on_scheme_used(error: TokenError, verdict: RequestVerdict | None) -> TokenError:
    """``error`` answered on the scheme the request used (RFC 9449 §7.1-7.2), e.g. a 403
    ``insufficient_scope`` for a DPoP request goes on the ``DPoP`` challenge."""
    if verdict is not None and error.auth_scheme == "Bearer":
        error.auth_scheme = verdict.scheme
    return error
