"""The one rule for serving a cached verdict (``results.serves``) and its inlined twins.

``TokenGuard.verify`` and ``TokenGuard.verify_sync`` inline the cache hit for
speed. These tests pin both copies to one definition: the two hit blocks are
the same code, and for any entry the guard answers from the cache exactly
when :func:`tokenguard.results.serves` says it may.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import textwrap
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenguard import InvalidToken, TokenClaims, TokenGuard
from tokenguard.cache import CachedResult
from tokenguard.results import capped, serves

NOW = 1_800_000_000.0
TOKEN = "opaque-token-value"


def hit_block(method: Any) -> str:
    """The statements of ``method`` before its ``try:`` (the inlined hit), as a normalised AST dump."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(method)))
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
    statements = [
        node for node in function.body if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
    ]
    block = []
    for node in statements:
        if isinstance(node, ast.Try):
            break
        block.append(node)
    assert block, "no inlined hit found"
    return "\n".join(ast.dump(node) for node in block)


def test_verify_and_verify_sync_inline_the_same_hit() -> None:
    """The two inlined hits are one piece of code (comments aside)."""
    assert hit_block(TokenGuard.verify) == hit_block(TokenGuard.verify_sync)


class Owner:
    """The keys an issuer trusts now (a ``HasThumbprints``)."""

    def __init__(self, thumbprints: frozenset[str]) -> None:
        self.current_thumbprints = thumbprints


class PlantedCache:
    """A cache backend that answers every key with one planted entry, and records deletions."""

    def __init__(self, entry: CachedResult) -> None:
        self.entry: CachedResult | None = entry
        self.deleted = 0

    def get(self, key: bytes) -> CachedResult | None:
        return self.entry

    def set(self, key: bytes, value: CachedResult) -> None:
        self.entry = value

    def delete(self, key: bytes) -> None:
        self.deleted += 1
        self.entry = None

    def clear(self) -> None:
        self.entry = None


def knows_nothing(token: str) -> Mapping[str, Any] | None:
    return None


offsets = st.sampled_from([-1e9, -10.0, -0.001, 0.0, 0.001, 10.0, 1e9, float("inf"), float("-inf")])
thumbprints = st.sampled_from([None, "k1", "k2"])
owners = st.one_of(
    st.none(), st.sampled_from([frozenset(), frozenset({"k1"}), frozenset({"k2"}), frozenset({"k1", "k2"})]).map(Owner)
)


@st.composite
def entries(draw: st.DrawFn) -> CachedResult:
    claims = draw(st.sampled_from([TokenClaims({"sub": "alice"}, token_type="custom"), None]))
    return CachedResult(
        claims,
        NOW + draw(offsets),
        valid_from=NOW + draw(offsets),
        valid_until=NOW + draw(offsets),
        reason="revoked" if claims is None else "",
        key_thumbprint=draw(thumbprints),
        key_owner=draw(owners),
    )


def answer(guard: TokenGuard, flavour: str) -> TokenClaims | str:
    try:
        if flavour == "sync":
            return guard.verify_sync(TOKEN)
        return asyncio.run(guard.verify(TOKEN))
    except InvalidToken as error:
        return error.description or ""


@pytest.mark.parametrize("flavour", ["sync", "async"])
@settings(max_examples=300, deadline=None)
@given(entry=entries())
def test_the_guard_answers_from_the_cache_exactly_when_serves_says_so(entry: CachedResult, flavour: str) -> None:
    """For any entry: a hit returns its claims iff ``serves``; a miss drops a
    stale entry or raises a live cached rejection, and never answers with it."""
    cache = PlantedCache(entry)
    guard = TokenGuard(verifier=knows_nothing, cache=cache, clock=lambda: NOW)
    result = answer(guard, flavour)
    if entry.claims is not None and serves(entry, NOW):
        assert result is entry.claims
        assert guard.stats["cache_hit"] == 1 and cache.deleted == 0
        return
    assert guard.stats["cache_hit"] == 0
    if entry.claims is None and NOW < entry.cache_until:
        assert result == "revoked"  # the cached rejection, raised again
        assert cache.deleted == 0
    else:
        assert result == "token format not accepted"  # verified afresh: nothing accepts it
        assert cache.deleted == 1 and guard.stats["cache_miss"] == 1


def test_capped_cuts_the_lifetime_only() -> None:
    """``capped`` shortens how long an entry is kept, never its window or key binding."""
    owner = Owner(frozenset({"k1"}))
    entry = CachedResult(
        TokenClaims({"sub": "a"}, token_type="jwt"), NOW + 100, NOW - 5, NOW + 200, "", "iss", "k1", owner
    )
    cut = capped(entry, NOW + 10)
    assert cut.cache_until == NOW + 10
    assert (cut.valid_from, cut.valid_until, cut.key_thumbprint, cut.key_owner) == (NOW - 5, NOW + 200, "k1", owner)
    assert capped(entry, NOW + 1000) is entry
