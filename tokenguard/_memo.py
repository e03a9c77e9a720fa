"""Bounded memo tables for values that repeat across tokens (headers, scopes, claim shapes).

Readers call the table's own ``dict.get`` (the fast path stays a C call);
only a miss comes here. The bound is crude on purpose: a full table is
emptied, so hostile input can cost at most ``max_entries`` entries and a
refill, never unbounded memory, and honest traffic (a handful of issuers,
clients and scope strings) refills it at once.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["remember"]

K = TypeVar("K")
V = TypeVar("V")


def remember(table: dict[K, V], key: K, value: V, max_entries: int) -> V:
    """Store ``value`` under ``key``, emptying ``table`` first when it holds ``max_entries``; return ``value``."""
    if len(table) >= max_entries:
        table.clear()
    table[key] = value
    return value
