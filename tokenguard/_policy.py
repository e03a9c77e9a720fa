"""What identifies a guard's policy, and the hash key processes sharing a store agree on.

A verdict is served only to a guard whose policy produced it (``store.py``
keys verdicts by :func:`guard_fingerprint`); processes sharing a store must
hash tokens with the same key (:func:`shared_hash_key`). No I/O.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Mapping
from typing import Any

from .introspection import Introspection
from .issuer import IssuerRuntime
from .store import policy_fingerprint

__all__ = ["canonical", "guard_fingerprint", "shared_hash_key"]

logger = logging.getLogger("tokenguard")


def canonical(value: object) -> object:
    """``value`` as nested tuples with sets sorted: a stable input for the policy fingerprint."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (
            type(value).__qualname__,
            tuple(
                (f.name, canonical(getattr(value, f.name)))
                for f in dataclasses.fields(value)
                if f.name != "client_secret"
            ),
        )
    if isinstance(value, frozenset | set):
        return tuple(sorted(repr(canonical(v)) for v in value))
    if isinstance(value, Mapping):
        return tuple(sorted((repr(k), repr(canonical(v))) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(canonical(v) for v in value)
    return value


def guard_fingerprint(
    issuers: Mapping[str, IssuerRuntime],
    jwt_scopes: Mapping[str, str],
    introspection: Introspection | None,
    verifier: Any,
    verifier_scope: str,
    verifier_cache_ttl: float,
    proof_of_possession: bool,
) -> bytes:
    """Everything that can change a verdict, digested.

    Each issuer's policy (issuer, audiences, algorithms, types, required
    claims, leeway, ages, scope claims), its key source and revocation
    checking; the introspection settings (endpoint, client, audiences,
    leeway, lifetimes...); the custom verifier (by identity: two verifiers
    never share verdicts); whether sender-constrained tokens pass as Bearer.
    """
    parts: list[object] = []
    for name in sorted(issuers):
        runtime = issuers[name]
        parts += [canonical(runtime.policy), jwt_scopes[name], runtime.config.check_revocation]
    parts.append(canonical(introspection))
    if verifier is not None:
        parts += [verifier_scope, id(verifier), verifier_cache_ttl]
    parts.append(("proof_of_possession", proof_of_possession))
    return policy_fingerprint(parts)


def shared_hash_key(issuers: Mapping[str, object], introspection: Introspection | None) -> tuple[bytes, bool]:
    """The hash key of processes sharing a store, and whether it is secret.

    Processes sharing a store must agree on the HMAC key. An explicit key
    (``TOKENGUARD_HASH_KEY``) is best; failing that, one derived from what
    every worker of this API is configured with, secret when a client secret
    is among it.
    """
    configured = os.environ.get("TOKENGUARD_HASH_KEY")
    if configured:
        return configured.encode(), True
    parts = ["tokenguard shared cache key v1", *sorted(issuers)]
    secret = False
    if introspection is not None:
        config = introspection
        parts += [config.endpoint or "", config.issuer or "", config.client_id, config.client_secret]
        secret = bool(config.client_secret)
    if not secret:
        logger.info("shared cache: no hash_key or client secret configured; cache keys are not secret")
    return hashlib.sha256("\0".join(parts).encode()).digest(), secret
