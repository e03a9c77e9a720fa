"""Policy-free facts for the shared store, and how a reader re-applies its own policy to them.

Rule: what crosses processes is what an upstream or a signature said, never
what one guard concluded from it (README, "Many workers": facts are shared,
verdicts stay local). Three kinds of fact exist:

* ``jwt``: the protected header and claims of a JWT whose signature verified
  with the key of thumbprint ``t``, for one issuer and key source (the key
  name's scope says which);
* ``introspection``: an RFC 7662 answer as received from one endpoint by one
  client (an authorization server may answer differently per client), and
  when it was received;
* ``custom``: what a named custom verifier answered.

A reader turns a fact back into claims with exactly the checks it applies to
a fresh answer (:func:`~tokenguard.jwt.check_header`,
:func:`~tokenguard.jwt.check_claims`, the introspection answer checks), with
its own audiences, types, required claims, leeway and cache lifetimes. So
two guards with different policies can share a store, and never accept a
token on the strength of each other's checks.

No I/O, no clock reads: callers pass ``now``.
"""

from __future__ import annotations

import json
import os
import types
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from .claims import TokenClaims, verified_jwt_claims
from .errors import InvalidToken
from .introspection import Introspection, IntrospectionResult, check_answer
from .jwt import JWTPolicy, check_claims, check_header

__all__ = [
    "custom_fact",
    "decode_fact",
    "introspection_fact",
    "jwt_fact",
    "read_custom_fact",
    "read_introspection_fact",
    "read_jwt_fact",
    "verifier_identity",
]

_FORMAT = 2


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate member name")  # as for JWT JSON (RFC 7515 §5.2)
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_unique, parse_constant=_reject_constant)


def _encode(kind: str, body: dict[str, Any]) -> bytes | None:
    try:
        return json.dumps({"f": _FORMAT, "k": kind, **body}, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError):
        return None  # claims that are not JSON are never shared


def decode_fact(data: bytes, kind: str) -> dict[str, Any] | None:
    """A stored fact of ``kind`` as a dict; ``None`` for anything else (another kind, malformed)."""
    try:
        document = _DECODER.decode(data.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(document, dict) or document.get("f") != _FORMAT or document.get("k") != kind:
        return None
    return document


# ---------------------------------------------------------------------- jwt


def jwt_fact(header: Mapping[str, Any], claims: TokenClaims, thumbprint: str) -> bytes | None:
    """The fact "this header and these claims were signed by the key ``thumbprint``"."""
    return _encode("jwt", {"h": dict(header), "c": claims.to_dict(), "t": thumbprint})


def read_jwt_fact(fact: Mapping[str, Any], policy: JWTPolicy, now: float) -> tuple[TokenClaims, str]:
    """Re-apply ``policy`` to a ``jwt`` fact: the claims and the key thumbprint.

    Raises:
        InvalidToken: the reader's policy refuses the token (or the fact is malformed).
    """
    header, payload, thumbprint = fact.get("h"), fact.get("c"), fact.get("t")
    if not isinstance(header, dict) or not isinstance(payload, dict) or not isinstance(thumbprint, str):
        raise InvalidToken("malformed shared entry")
    check_header(header, policy)
    exp, nbf, iat = check_claims(payload, policy, now)
    return verified_jwt_claims(payload, policy.scope_claims, exp, nbf, iat), thumbprint


# ---------------------------------------------------------------------- introspection


def introspection_fact(answer: Mapping[str, Any], received: float) -> bytes | None:
    """The fact "the introspection endpoint answered ``answer`` at ``received``"."""
    return _encode("introspection", {"a": dict(answer), "r": received})


def read_introspection_fact(fact: Mapping[str, Any], config: Introspection, now: float) -> IntrospectionResult | None:
    """Re-apply the reader's introspection checks to a shared answer.

    Returns ``None`` when the answer is older than the reader's own cache
    lifetime for it (``cache_ttl`` when active, ``negative_ttl`` when not):
    the reader's revocation latency is its own, whoever fetched the answer.
    """
    answer, received = fact.get("a"), fact.get("r")
    if not isinstance(answer, dict) or not isinstance(received, int | float) or isinstance(received, bool):
        return None
    result = check_answer(answer, config, now)
    age = max(0.0, now - received)
    budget = (config.cache_ttl if result.claims is not None else config.negative_ttl) - age
    ttl = min(result.ttl, budget)
    if ttl <= 0:
        return None
    return IntrospectionResult(result.claims, ttl, result.reason, answer)


# ---------------------------------------------------------------------- custom verifiers


#: Identities of verifiers that carry their own configuration (see
#: :func:`verifier_identity`): one random name per object, for its lifetime.
_LOCAL_IDENTITIES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def verifier_identity(verifier: Callable[..., Any]) -> str:
    """A name for a custom verifier: the same in every worker process when it
    can be, and never the same for two verifiers that may answer differently.

    A plain function defined at module level (lambdas included, told apart by
    their source line) is its module and qualified name: every worker shares
    its answers. Anything that carries configuration of its own, which a name
    cannot tell apart, gets a random name private to this process (its answers
    are then not shared across processes): an instance with ``__call__``, a
    bound method, a ``functools.partial``, a closure or a nested function.
    ``TenantVerifier("a")`` and ``TenantVerifier("b")`` must never serve each
    other's answers, whatever key they share.
    """
    code = getattr(verifier, "__code__", None)
    if isinstance(verifier, types.FunctionType) and code is not None and not verifier.__closure__:
        name = f"{verifier.__module__}.{verifier.__qualname__}"
        if "<locals>" not in name:
            if "<" in name:
                name += f"@{code.co_filename}:{code.co_firstlineno}"
            return name
    try:
        found = _LOCAL_IDENTITIES.get(verifier)
        if found is None:
            found = _LOCAL_IDENTITIES[verifier] = "local:" + os.urandom(16).hex()
        return found
    except TypeError:  # neither hashable nor weakly referenced: a fresh name each time
        return "local:" + os.urandom(16).hex()


def custom_fact(answer: Mapping[str, Any]) -> bytes | None:
    """The fact "the custom verifier answered ``answer``"."""
    return _encode("custom", {"a": dict(answer)})


def read_custom_fact(fact: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The custom verifier's answer in a ``custom`` fact, for the reader to check as a fresh one."""
    answer = fact.get("a")
    return answer if isinstance(answer, dict) else None
