"""Bounded memo tables for values that repeat across tokens (headers, scopes, claim shapes).

Readers call the table's own ``dict.get`` (the fast path stays a C call);
only a miss comes here. The bound is crude on purpose: a full table is
emptied, so hostile input can cost at most ``max_entries`` entries and a
refill, never unbounded memory, and honest traffic (a handful of issuers,
clients and scope strings) refills it at once.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = [
    "CLAIM_SHAPES_LIMIT",
    "HEADER_CHECKS_LIMIT",
    "JOSE_HEADERS_LIMIT",
    "SCOPE_STRINGS_LIMIT",
    "SINGLE_AUDIENCES_LIMIT",
    "remember",
]

# The bound of every memo table in the package, in one place. Each is far above
# what honest traffic needs (a handful of issuers, key ids, clients and scope
# strings) and small enough that a flood of made-up values costs little memory.

#: Parsed JOSE headers, by their encoded bytes (``jwt.py``).
JOSE_HEADERS_LIMIT = 64
#: Header checks (``alg`` allow-list, ``crit``, ``typ``) per issuer, by the encoded header (``issuer.py``).
HEADER_CHECKS_LIMIT = 64
#: Parsed ``scope`` strings (``scopes.py``).
SCOPE_STRINGS_LIMIT = 4096
#: Claim-name shapes of verified tokens (``claims.py``).
CLAIM_SHAPES_LIMIT = 1024
#: One-audience tuples, by the ``aud`` string (``claims.py``).
SINGLE_AUDIENCES_LIMIT = 1024

K = TypeVar("K")
V = TypeVar("V")


def remember(table: dict[K, V], key: K, value: V, max_entries: int) -> V:
    """Store ``value`` under ``key``, emptying ``table`` first when it holds ``max_entries``; return ``value``."""
    if len(table) >= max_entries:
        table.clear()
    table[key] = value
    return value
