"""Scopes: parse, format, normalise from claims, and check requirements.

No I/O, no framework imports, no clock reads.

Providers disagree on the shape of scopes: RFC 6749 §3.3 and RFC 9068 §2.2.3
use a space-separated ``scope`` string, IdentityServer emits a JSON array,
Entra ID uses ``scp`` (and ``roles`` for applications). All of them become one
``frozenset[str]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._memo import SCOPE_STRINGS_LIMIT, remember
from .errors import ConfigurationError, InsufficientScope

__all__ = [
    "DEFAULT_SCOPE_CLAIMS",
    "ScopeRequirement",
    "format_scope",
    "parse_scope",
    "scopes_from_claims",
]

#: Claims read for scopes, in order; their values are merged.
DEFAULT_SCOPE_CLAIMS: tuple[str, ...] = ("scope", "scp")

# Tokens of one client carry the same scope string over and over: parse each
# string once and share the frozenset (and its strings) between every cached
# token that has it. Faster than splitting, and a few hundred bytes less per
# cached token. Bounded, and only for strings of ordinary length, so hostile
# tokens cannot grow it without limit.
_PARSED: dict[str, frozenset[str]] = {}
_PARSED_MAX_ENTRIES = SCOPE_STRINGS_LIMIT
_PARSED_MAX_LENGTH = 1024


def parse_scope(value: object) -> frozenset[str]:
    """Parse a scope claim: a space-separated string or a JSON array of strings.

    The reverse of :func:`format_scope`. Values of any other shape (numbers,
    nested arrays, objects) contribute nothing: a malformed claim grants no
    scope rather than failing the token.
    """
    if isinstance(value, str):
        parsed = _PARSED.get(value)
        if parsed is not None:
            return parsed
        # RFC 6749 §3.3: scope-tokens separated by one space; be liberal about
        # runs of whitespace, which some providers emit.
        parsed = frozenset(value.split())
        if len(value) <= _PARSED_MAX_LENGTH:
            remember(_PARSED, value, parsed, _PARSED_MAX_ENTRIES)
        return parsed
    if isinstance(value, list | tuple):
        return frozenset(
            # An array member with whitespace is not one scope-token; skip it.
            item
            for item in value
            if isinstance(item, str) and item.split() == [item]
        )
    return frozenset()


def format_scope(scopes: Iterable[str]) -> str:
    """Format scopes as the RFC 6749 §3.3 space-separated string, sorted.

    The reverse of :func:`parse_scope`.
    """
    return " ".join(sorted(scopes))


def scopes_from_claims(claims: Mapping[str, Any], names: Sequence[str] = DEFAULT_SCOPE_CLAIMS) -> frozenset[str]:
    """Merge the scopes found under each claim in ``names``."""
    found: frozenset[str] = _EMPTY
    for name in names:
        value = claims.get(name)
        if value is not None:
            parsed = parse_scope(value)
            found = parsed if not found else found | parsed
    return found


_EMPTY: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ScopeRequirement:
    """Scopes a route needs: all of them (default) or any one of them.

    Framework adapters turn a requirement into a decorator or dependency; the
    check itself is always :meth:`check`.
    """

    scopes: tuple[str, ...]
    any_of: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.scopes, str | bytes):
            # ("read") is a str: iterated, it would require the scopes r, e, a, d.
            raise ConfigurationError(f"scopes must be a sequence of scope names, not the string {self.scopes!r}")
        for scope in self.scopes:
            if not isinstance(scope, str):
                raise ConfigurationError(f"scope names must be strings, not {type(scope).__name__} {scope!r}")
            if not scope or any(c.isspace() for c in scope) or '"' in scope or "\\" in scope:
                raise ConfigurationError(f"invalid scope name {scope!r}")

    def is_satisfied_by(self, granted: frozenset[str]) -> bool:
        """Whether ``granted`` meets this requirement."""
        if not self.scopes:
            return True
        if self.any_of:
            return not granted.isdisjoint(self.scopes)
        return granted.issuperset(self.scopes)

    def check(self, granted: frozenset[str]) -> None:
        """Raise :class:`InsufficientScope` unless ``granted`` meets the requirement.

        The error carries every scope of the requirement, so the 403 challenge
        tells the client exactly what to ask for (RFC 6750 §3.1).
        """
        if not self.is_satisfied_by(granted):
            raise InsufficientScope(self.scopes, any_of=self.any_of)
