"""KeyedHMAC (precomputed RFC 2104 states) gives exactly hmac.digest's bytes."""

from __future__ import annotations

import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenguard._hmac import KeyedHMAC
from tokenguard.cache import TokenHasher


@pytest.mark.parametrize("name", ["sha256", "sha384", "sha512"])
@given(key=st.binary(min_size=0, max_size=300), message=st.binary(max_size=2000))
def test_matches_hmac_digest(name: str, key: bytes, message: bytes) -> None:
    # Keys shorter than, equal to and longer than the block (64 or 128 bytes).
    assert KeyedHMAC(key, name).digest(message) == hmac.digest(key, message, name)


def test_states_are_not_consumed() -> None:
    keyed = KeyedHMAC(b"k" * 32)
    first = keyed.digest(b"one")
    keyed.digest(b"two")
    assert keyed.digest(b"one") == first


@given(key=st.binary(min_size=1, max_size=100), token=st.text(max_size=500))
def test_cache_key_is_hmac_sha256_of_the_token(key: bytes, token: str) -> None:
    expected = hmac.digest(key, token.encode("utf-8", "surrogateescape"), "sha256")
    assert TokenHasher(key).cache_key(token) == expected


def test_repr_hides_the_key() -> None:
    assert "secret" in repr(KeyedHMAC(b"super-secret-key"))
    assert "super" not in repr(KeyedHMAC(b"super-secret-key"))
