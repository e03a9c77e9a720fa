"""Cache entries and the one rule for serving them.

A verdict is cached as a :class:`~tokenguard.cache.CachedResult`: the claims
(or, for a cached rejection, the reason), how long the entry may be kept
(``cache_until``), the window in which its claims may be served
(``valid_from`` … ``valid_until``: ``nbf``/``exp`` widened by the leeway), and
for a JWT the fingerprint of the key that verified it and where this process
reads the keys it trusts now. The builders below are the only places such
entries are made; :func:`serves` is the only rule deciding whether one
answers. (:meth:`TokenGuard.verify` and :meth:`TokenGuard.verify_sync` inline
it for speed; ``tests/test_results.py`` pins both copies to this definition.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cache import CachedResult
from .claims import TokenClaims

if TYPE_CHECKING:
    from .issuer import IssuerRuntime

__all__ = [
    "NEVER_BEFORE",
    "NO_EXP_CACHE_SECONDS",
    "capped",
    "custom_entry",
    "introspection_entry",
    "jwt_entry",
    "rejection_entry",
    "serves",
]

#: Longest a verified JWT without ``exp`` stays cached (only when ``require_exp=False``).
NO_EXP_CACHE_SECONDS = 300.0
#: ``valid_from`` of an entry whose token has no ``nbf``.
NEVER_BEFORE = float("-inf")


def serves(entry: CachedResult, now: float) -> bool:
    """Whether a positive entry may answer now: inside its lifetime and time
    window, and, for a JWT, its key still trusted (an empty set of trusted
    fingerprints: this process has not loaded the keys yet, so the entry came
    from the shared store; local results load them)."""
    if not (now < entry.cache_until and entry.valid_from <= now < entry.valid_until):
        return False
    owner = entry.key_owner
    if owner is None:
        return entry.key_thumbprint is None  # not a JWT: no key to outlive
    return entry.key_thumbprint in owner.current_thumbprints or not owner.current_thumbprints


def capped(entry: CachedResult, until: float) -> CachedResult:
    """``entry`` with its cache lifetime cut to ``until`` (the in-process level in front of a shared store)."""
    if entry.cache_until <= until:
        return entry
    return CachedResult(
        entry.claims,
        until,
        valid_from=entry.valid_from,
        valid_until=entry.valid_until,
        reason=entry.reason,
        issuer=entry.issuer,
        key_thumbprint=entry.key_thumbprint,
        key_owner=entry.key_owner,
    )


def jwt_entry(
    claims: TokenClaims, runtime: IssuerRuntime, thumbprint: str, now: float, cache_until: float | None
) -> CachedResult:
    """The entry of a verified JWT: valid until ``exp`` (and ``max_token_age``) plus leeway,
    tied to the signing key with fingerprint ``thumbprint``.

    Args:
        cache_until: an earlier end for the entry (a revocation check's TTL), if any.
    """
    policy = runtime.policy
    leeway = policy.leeway
    exp = claims.exp
    valid_until = exp + leeway if exp is not None else now + NO_EXP_CACHE_SECONDS
    if policy.max_token_age is not None and claims.iat is not None:
        valid_until = min(valid_until, claims.iat + policy.max_token_age + leeway)
    nbf = claims.nbf
    return CachedResult(
        claims,
        valid_until if cache_until is None else min(valid_until, cache_until),
        nbf - leeway if nbf is not None else NEVER_BEFORE,
        valid_until,
        "",
        policy.issuer,
        thumbprint,
        runtime.key_owner,
    )


def introspection_entry(claims: TokenClaims, ttl: float, leeway: float, now: float) -> CachedResult:
    """The entry of an active introspection answer: kept ``ttl`` seconds, served within ``nbf``/``exp`` ± leeway."""
    return CachedResult(
        claims,
        now + ttl,
        valid_from=claims.nbf - leeway if claims.nbf is not None else NEVER_BEFORE,
        valid_until=claims.exp + leeway if claims.exp is not None else float("inf"),
    )


def custom_entry(claims: TokenClaims, cache_until: float) -> CachedResult:
    """The entry of a custom verifier's answer: kept until ``cache_until``, never served past ``exp``."""
    return CachedResult(claims, cache_until, valid_until=claims.exp or float("inf"))


def rejection_entry(reason: str, cache_until: float) -> CachedResult:
    """A cached refusal (an inactive introspection answer): raised again until ``cache_until``."""
    return CachedResult(None, cache_until, reason=reason)
