"""Property tests for the shared-cache wire format: whatever Redis holds, nothing crashes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tokenguard._effects import HttpReply
from tokenguard.cache import CachedResult
from tokenguard.claims import TokenClaims
from tokenguard.shared import decode_reply, decode_result, encode_reply, encode_result

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(st.binary(max_size=2000))
def test_decode_result_never_raises_on_bytes(data: bytes) -> None:
    result = decode_result(data)
    assert result is None or isinstance(result, CachedResult)


@given(json_values)
def test_decode_result_never_raises_on_json(value: Any) -> None:
    result = decode_result(json.dumps(value).encode())
    assert result is None or isinstance(result, CachedResult)


@given(st.dictionaries(st.text(), json_values, max_size=8), st.floats(0, 2e9), st.sampled_from(["jwt", "opaque"]))
def test_results_round_trip(raw: dict[str, Any], until: float, token_type: Any) -> None:
    claims = TokenClaims(raw, token_type=token_type)
    data = encode_result(CachedResult(claims, until))
    assert data is not None
    back = decode_result(data)
    assert back is not None and back.claims is not None
    assert back.claims == claims
    assert back.claims.scopes == claims.scopes
    assert back.cache_until == until


@given(st.binary(max_size=2000), st.floats(0, 2e9))
def test_decode_reply_never_raises(data: bytes, now: float) -> None:
    result = decode_reply(data, now)
    assert result is None or isinstance(result[0], HttpReply)


@given(st.text(max_size=500), st.integers(0, 10_000), st.integers(0, 100_000))
def test_replies_round_trip_and_age(body: str, age: int, waited: int) -> None:
    reply = HttpReply(200, {"cache-control": "max-age=600", "age": str(age), "x-other": "dropped"}, body.encode())
    decoded = decode_reply(encode_reply(reply, 1000.0), 1000.0 + waited)
    assert decoded is not None
    back, fetched_at = decoded
    assert fetched_at == 1000.0
    assert back.body == body.encode("utf-8", "replace")
    assert back.headers["age"] == str(age + waited)
    assert "x-other" not in back.headers
