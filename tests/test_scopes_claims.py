"""Scopes and claims normalisation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenguard import InsufficientScope, ScopeRequirement, TokenClaims, format_scope, parse_scope
from tokenguard.claims import numeric_date
from tokenguard.errors import ConfigurationError


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("read write", {"read", "write"}),
        ("read  write ", {"read", "write"}),
        (["read", "write"], {"read", "write"}),
        ([], set()),
        ("", set()),
        (["read", 1, None, ["nested"], "a b"], {"read"}),
        (42, set()),
        ({"read": True}, set()),
        (None, set()),
    ],
)
def test_parse_scope_shapes(value: object, expected: set[str]) -> None:
    """Space strings and arrays both parse; malformed members grant nothing."""
    assert parse_scope(value) == frozenset(expected)


@given(st.sets(st.text(alphabet="abcdefghijklmnopqrstuvwxyz:._-", min_size=1, max_size=12), max_size=8))
def test_format_parse_round_trip(scopes: set[str]) -> None:
    """format_scope and parse_scope are inverses."""
    assert parse_scope(format_scope(scopes)) == frozenset(scopes)


@given(st.one_of(st.text(), st.lists(st.one_of(st.text(), st.integers(), st.none())), st.integers(), st.none()))
def test_parse_scope_never_raises(value: object) -> None:
    """Any claim value gives a frozenset of non-empty strings."""
    result = parse_scope(value)
    assert all(isinstance(s, str) and s and not any(c.isspace() for c in s) for s in result)


def test_requirement_all_and_any() -> None:
    """All-of needs every scope; any-of needs one."""
    granted = frozenset({"read"})
    ScopeRequirement(("read",)).check(granted)
    with pytest.raises(InsufficientScope) as info:
        ScopeRequirement(("read", "write")).check(granted)
    assert info.value.scopes == ("read", "write")
    ScopeRequirement(("read", "write"), any_of=True).check(granted)
    with pytest.raises(InsufficientScope):
        ScopeRequirement(("write", "admin"), any_of=True).check(granted)


def test_requirement_rejects_bad_scope_names() -> None:
    """Scope names that cannot appear in a challenge are refused at configuration."""
    with pytest.raises(ConfigurationError):
        ScopeRequirement(("a b",))


def test_claims_normalisation() -> None:
    """TokenClaims normalises aud, scopes, client id and dates; raw claims stay reachable."""
    claims = TokenClaims(
        {"sub": "u", "iss": "i", "aud": "a", "scp": ["x"], "scope": "y z", "azp": "c", "exp": 2000000000, "email": "e"},
        token_type="jwt",
    )
    assert claims.audience == ("a",)
    assert claims.scopes == {"x", "y", "z"}
    assert claims.client_id == "c"
    assert claims.expires_at == datetime.fromtimestamp(2000000000, UTC)
    assert claims["email"] == "e"
    assert claims.token_type == "jwt"


def test_claims_are_immutable() -> None:
    """No attribute or item can be changed."""
    claims = TokenClaims({"sub": "u", "roles": ["a"]}, token_type="jwt")
    with pytest.raises(AttributeError):
        claims.subject = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        claims["sub"] = "x"  # type: ignore[index]


def test_custom_scope_claims() -> None:
    """Configured claim names are read for scopes."""
    claims = TokenClaims({"roles": ["admin"], "scope": "read"}, token_type="jwt", scope_claims=("roles",))
    assert claims.scopes == {"admin"}


@pytest.mark.parametrize("value", [True, False, "123", None, float("nan"), float("inf"), [1]])
def test_numeric_date_refuses_non_numbers(value: object) -> None:
    """Booleans, strings, NaN and infinities are not NumericDates."""
    assert numeric_date(value) is None


def test_repr_does_not_dump_claims() -> None:
    """The repr names the token, not its personal data."""
    claims = TokenClaims({"sub": "u", "email": "secret@example.com"}, token_type="opaque")
    assert "secret@example.com" not in repr(claims)


def test_claims_mapping_behaves_like_the_dict_it_came_from() -> None:
    """Names are shared between tokens of one shape; each claims object reads like its dict."""
    from tokenguard.claims import TokenClaims

    first = TokenClaims({"sub": "a", "scope": "x y", "n": [1]}, token_type="jwt")
    second = TokenClaims({"sub": "b", "scope": "x", "n": [2]}, token_type="jwt")
    assert first._shape is second._shape
    assert dict(first) == {"sub": "a", "scope": "x y", "n": [1]}
    assert (first["sub"], second["sub"]) == ("a", "b")
    assert first.get("missing") is None and first.get("missing", 5) == 5
    assert "n" in first and "missing" not in first
    assert list(first) == ["sub", "scope", "n"] and len(first) == 3
    assert first != second and first == TokenClaims(first.to_dict(), token_type="jwt")
    with pytest.raises(KeyError):
        first["missing"]
    assert dict(TokenClaims({}, token_type="opaque")) == {}
