"""TokenClaims' derived attributes, built the same way on every path.

The JWT path builds claims without the constructor (``verified_jwt_claims``)
and reads ``audience`` and ``client_id`` from the claims only when asked;
these tests hold both paths to the same answers, hostile shapes included.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tokenguard.claims import TokenClaims, verified_jwt_claims

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
json_value = st.one_of(
    json_scalar, st.lists(json_scalar, max_size=4), st.dictionaries(st.text(max_size=4), json_scalar)
)
claim_names = st.sampled_from(["iss", "sub", "aud", "client_id", "azp", "cid", "scope", "scp", "amr", "acr", "x"])


def _both(payload: dict[str, Any]) -> tuple[TokenClaims, TokenClaims]:
    built = TokenClaims(payload, token_type="jwt")
    taken_over = verified_jwt_claims(dict(payload), ("scope", "scp"), None, None, None)
    return built, taken_over


def test_client_id_first_present_name_decides() -> None:
    cases: list[tuple[dict[str, Any], str | None]] = [
        ({"client_id": "a", "azp": "b", "cid": "c"}, "a"),
        ({"azp": "b", "cid": "c"}, "b"),
        ({"cid": "c"}, "c"),
        ({"client_id": None, "azp": "b"}, None),  # present but not a string: no fallback
        ({"client_id": ["a"], "cid": "c"}, None),
        ({}, None),
    ]
    for payload, expected in cases:
        for claims in _both(payload):
            assert claims.client_id == expected, payload


def test_audience_from_string_or_array_of_strings() -> None:
    for payload, expected in [
        ({"aud": "api"}, ("api",)),
        ({"aud": ["a", 1, None, "b"]}, ("a", "b")),
        ({"aud": 7}, ()),
        ({}, ()),
    ]:
        for claims in _both(payload):
            assert claims.audience == expected


def test_derived_attributes_are_read_only() -> None:
    claims = TokenClaims({"aud": "api", "client_id": "c"}, token_type="jwt")
    for name in ("audience", "client_id"):
        try:
            setattr(claims, name, "x")
        except AttributeError:
            continue
        raise AssertionError(f"{name} was assignable")


@given(st.dictionaries(claim_names, json_value, max_size=8))
def test_both_paths_agree(payload: dict[str, Any]) -> None:
    built, taken_over = _both(payload)
    assert built.to_dict() == taken_over.to_dict() == payload
    for name in ("subject", "issuer", "audience", "client_id", "scopes"):
        assert getattr(built, name) == getattr(taken_over, name), name
