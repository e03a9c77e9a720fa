"""Token segments decode identically with and without the optional SIMD decoder (pybase64)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenguard import InvalidToken
from tokenguard import jwt as jwt_module

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# Mostly the alphabet, with characters a decoder might let through. "+" and
# "/" are left out: parse_jws refuses any token holding them before decoding
# (test_standard_alphabet_is_refused).
SEGMENTS = st.text(alphabet=ALPHABET, max_size=200) | st.text(alphabet=ALPHABET + " \t\n=.!é\x00\u2028", max_size=60)


def _decode(segment: str, fast: bool, monkeypatch: pytest.MonkeyPatch) -> bytes | None:
    if not fast:
        monkeypatch.setattr(jwt_module, "_FAST_DECODE", None)
    try:
        return jwt_module._b64decode(segment)
    except InvalidToken:
        return None
    finally:
        monkeypatch.undo()


@pytest.fixture(scope="module", autouse=True)
def _needs_the_fast_decoder() -> None:
    if jwt_module._FAST_DECODE is None:  # pragma: no cover - the dev extra installs it
        pytest.fail("pybase64 is part of the dev extra; without it this comparison tests nothing")


@given(SEGMENTS)
def test_both_decoders_agree(segment: str) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        fast = _decode(segment, True, monkeypatch)
        slow = _decode(segment, False, monkeypatch)
    assert fast == slow


@given(st.binary(max_size=300))
def test_canonical_encodings_round_trip(data: bytes) -> None:
    segment = base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert _decode(segment, True, monkeypatch) == data
        assert _decode(segment, False, monkeypatch) == data


@pytest.mark.parametrize("segment", ["ab c", "abé=", "ab\n", "a", "ab=c", "aB", "abcdeF", "ab\ud800", "\udcff\udcff"])
def test_refusals(segment: str) -> None:
    # Whitespace, non-ASCII, a lone character, inner padding, non-canonical tails
    # ("aB" and "abcdeF" carry spare bits that are not zero). The caller refuses
    # "+", "/" and "=" before decoding.
    with pytest.MonkeyPatch.context() as monkeypatch:
        assert _decode(segment, True, monkeypatch) is None
        assert _decode(segment, False, monkeypatch) is None


@pytest.mark.parametrize("segment", ["ab+c", "ab/c", "abc="])
def test_standard_alphabet_is_refused(segment: str) -> None:
    # base64 (not base64url) characters and padding never reach a decoder.
    with pytest.raises(InvalidToken, match="malformed"):
        jwt_module.parse_jws(f"eyJhbGciOiJSUzI1NiJ9.{segment}.c2ln")
