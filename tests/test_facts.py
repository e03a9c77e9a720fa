"""Shared facts: parsed strictly, and re-checked with the reader's own policy and lifetimes."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenguard import InvalidToken, TokenClaims
from tokenguard.facts import (
    decode_fact,
    introspection_fact,
    jwt_fact,
    read_introspection_fact,
    read_jwt_fact,
    verifier_identity,
)
from tokenguard.introspection import Introspection
from tokenguard.jwt import JWTPolicy
from tokenguard.redis_cache import RedisCache
from tokenguard.testing import LocalIssuer

from .conftest import RedisServer

NOW = 1_800_000_000.0
ISS = "https://issuer.test"
POLICY = JWTPolicy(issuer=ISS, audiences=("https://payments.api",))
CLAIMS = {"iss": ISS, "aud": "https://payments.api", "sub": "u", "iat": int(NOW), "exp": int(NOW) + 300}
HEADER = {"alg": "ES256", "kid": "k1", "typ": "at+jwt"}
CONFIG = Introspection(endpoint="https://as.test/introspect", client_id="rs", audience="https://payments.api")


def jwt_document(header: dict[str, Any] = HEADER, claims: dict[str, Any] = CLAIMS) -> dict[str, Any]:
    data = jwt_fact(header, TokenClaims(claims, token_type="jwt"), "thumb")
    assert data is not None
    fact = decode_fact(data, "jwt")
    assert fact is not None
    return fact


def test_jwt_fact_round_trip_under_the_writers_policy() -> None:
    """The claims and thumbprint come back, checked with the reader's policy."""
    claims, thumbprint = read_jwt_fact(jwt_document(), POLICY, NOW)
    assert claims.subject == "u"
    assert thumbprint == "thumb"


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (JWTPolicy(issuer=ISS, audiences=("https://admin.api",)), "wrong audience"),
        (JWTPolicy(issuer=ISS, audiences=None, required_claims=("email",)), "missing required claim"),
        (JWTPolicy(issuer=ISS, audiences=None, token_types=("application/at+jwt",), algorithms=frozenset({"RS256"})),
         ""),
        (JWTPolicy(issuer="https://other.test", audiences=None), "wrong issuer"),
    ],
)
def test_jwt_fact_is_refused_by_a_stricter_reader(policy: JWTPolicy, message: str) -> None:
    """Another reader's audiences, required claims, algorithms or issuer refuse the same fact."""
    with pytest.raises(InvalidToken, match=message or None):
        read_jwt_fact(jwt_document(), policy, NOW)


def test_jwt_fact_is_refused_once_expired_for_the_reader() -> None:
    """Dates are re-checked at the reader's clock and leeway."""
    with pytest.raises(InvalidToken, match="expired"):
        read_jwt_fact(jwt_document(), JWTPolicy(issuer=ISS, audiences=None, leeway=0), NOW + 301)


def test_introspection_fact_honours_the_readers_lifetime() -> None:
    """A shared answer is used only within the reader's own cache_ttl, counted from when it was received."""
    answer = {"active": True, "sub": "u", "aud": "https://payments.api", "exp": NOW + 3600}
    data = introspection_fact(answer, NOW)
    assert data is not None
    fact = decode_fact(data, "introspection")
    assert fact is not None
    fresh = read_introspection_fact(fact, CONFIG, NOW + 10)
    assert fresh is not None and fresh.claims is not None
    assert fresh.ttl == pytest.approx(50)  # cache_ttl 60 s, 10 s already spent
    assert read_introspection_fact(fact, CONFIG, NOW + 61) is None
    short = Introspection(endpoint="https://as.test/introspect", client_id="rs", cache_ttl=5)
    assert read_introspection_fact(fact, short, NOW + 10) is None


def test_a_fact_of_one_kind_is_not_read_as_another() -> None:
    """An introspection fact planted where a JWT fact is expected is absent."""
    data = introspection_fact({"active": True}, NOW)
    assert data is not None
    assert decode_fact(data, "jwt") is None


@pytest.mark.parametrize(
    "data",
    [b'{"f":2,"k":"jwt","k":"introspection"}', b'{"f":1,"k":"jwt"}', b"[]", b"\xff", b'{"f":2,"k":"jwt","c":NaN}'],
)
def test_malformed_facts_are_absent(data: bytes) -> None:
    """Duplicate members, another format, not an object, not UTF-8, NaN: absent."""
    assert decode_fact(data, "jwt") is None


@given(st.binary(max_size=300))
def test_decode_fact_never_raises(data: bytes) -> None:
    """Any bytes: a dict of the asked kind, or None."""
    fact = decode_fact(data, "jwt")
    assert fact is None or fact["k"] == "jwt"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)


@given(st.dictionaries(st.sampled_from(["h", "c", "t", "a", "r", "x"]), json_values))
def test_reading_any_fact_gives_claims_or_a_token_error(document: dict[str, Any]) -> None:
    """Whatever a fact holds: claims, None, or InvalidToken; never another exception."""
    try:
        read_jwt_fact(document, POLICY, NOW)
    except InvalidToken:
        pass
    result = read_introspection_fact(document, CONFIG, NOW)
    assert result is None or result.ttl > 0
    json.dumps(document)  # still the same JSON-able document


FIRST_LAMBDA = lambda token: None  # noqa: E731 - the point of the test
SECOND_LAMBDA = lambda token: None  # noqa: E731


def test_verifier_identity_tells_lambdas_apart() -> None:
    """Lambdas share a qualified name; their source line tells them apart, the same in every process."""
    assert verifier_identity(FIRST_LAMBDA) != verifier_identity(SECOND_LAMBDA)
    assert verifier_identity(FIRST_LAMBDA) == verifier_identity(FIRST_LAMBDA)
    assert verifier_identity(FIRST_LAMBDA).startswith("tests.test_facts.<lambda>@")
    assert verifier_identity(test_verifier_identity_tells_lambdas_apart).endswith(
        "test_facts.test_verifier_identity_tells_lambdas_apart"
    )


def test_verifier_identity_of_configured_verifiers_is_private() -> None:
    """Nested functions and lambdas may capture configuration: each gets its own
    process-local name, stable for its lifetime."""
    first = lambda token: None  # noqa: E731
    second = lambda token: None  # noqa: E731
    assert verifier_identity(first) != verifier_identity(second)
    assert verifier_identity(first) == verifier_identity(first)
    assert verifier_identity(first).startswith("local:")


@pytest.mark.integration
def test_a_forgeable_setup_is_a_warning(
    shared_issuer: LocalIssuer,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No hash_key, no client secret, no encryption key: the guard warns that entries are forgeable."""
    monkeypatch.delenv("TOKENGUARD_HASH_KEY", raising=False)
    with caplog.at_level(logging.WARNING, logger="tokenguard"):
        shared_issuer.guard(introspection=False, cache=RedisCache(redis_server.url))
    assert any("forge" in record.getMessage() for record in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tokenguard"):
        shared_issuer.guard(introspection=False, cache=RedisCache(redis_server.url), hash_key=b"k" * 32)
    assert not any("forge" in record.getMessage() for record in caplog.records)
