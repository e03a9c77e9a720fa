"""Introspection answers are read as strictly as JWTs (RFC 7662 §2.2), from a real loopback server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenguard import InvalidToken, TokenClaims, TokenError
from tokenguard._effects import HttpReply
from tokenguard.introspection import Introspection, check_answer, interpret_introspection
from tokenguard.testing import Fault, LocalIssuer

API = "https://api.test"


@pytest.fixture(scope="module")
def server() -> Iterator[LocalIssuer]:
    with LocalIssuer(algorithms=("ES256",)) as issuer:
        yield issuer


def answer(**members: Any) -> bytes:
    """An introspection answer issued now, with a day's lifetime, ``members`` added."""
    now = int(time.time())
    document = {"active": True, "sub": "user-1", "aud": API, "iat": now, "exp": now + 86400, **members}
    return json.dumps({k: v for k, v in document.items() if v is not None}).encode()


def built(body: bytes | dict[str, Any]) -> bytes:
    """A parameter as the answer's bytes: raw bytes as they are, members through answer().

    Parameters carry members, not finished answers: answers built at collection time would
    carry the collection's clock in their test ids, and parallel workers collecting at
    different seconds would disagree on the test list.
    """
    return body if isinstance(body, bytes) else answer(**body)


def verify(server: LocalIssuer, body: bytes, flavour: str) -> TokenClaims:
    """Verify a fresh opaque token against ``body`` as the introspection answer."""
    server.faults["/introspect"] = Fault(status=200, body=body)
    guard = server.guard(audience=API)
    token = f"opaque-{time.monotonic_ns()}"
    try:
        if flavour == "sync":
            return guard.verify_sync(token)

        async def run() -> TokenClaims:
            try:
                return await guard.verify(token)
            finally:
                await guard.aclose()

        return asyncio.run(run())
    finally:
        guard.close()


@pytest.mark.integration
@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (dict(token_type="refresh_token"), "not an access token"),
        (dict(token_type="id_token"), "not an access token"),
        (dict(token_type=["Bearer"]), "not an access token"),
        (dict(token_use="refresh_token"), "not an access token"),
        (b'{"active": true, "active": false, "sub": "u"}', "malformed introspection answer"),
        (b'{"active": false, "sub": "u", "active": true}', "malformed introspection answer"),
        (b'{"active": true, "sub": "u", "sub": "admin"}', "malformed introspection answer"),
        (dict(nbf="yesterday"), "malformed nbf"),
        (dict(iat="2024-01-01"), "malformed iat"),
        (dict(iat=True), "malformed iat"),
        (dict(exp="soon"), "malformed exp"),
        (dict(aud="https://admin.api"), "wrong audience"),
        (dict(aud=["https://admin.api", "https://other.api"]), "wrong audience"),
        (dict(aud=[]), "wrong audience"),
        (dict(aud=42), "wrong audience"),
        # RFC 9449 §6.2: "DPoP" names a bound token only with its cnf key...
        (dict(token_type="DPoP"), "not an access token"),
        (dict(token_type="DPoP", cnf="jkt"), "not an access token"),
        # ...and a bound token is still refused by a guard without DPoP (§7.2).
        (dict(token_type="DPoP", cnf={"jkt": "0" * 43}), "sender-constrained token presented as a bearer"),
    ],
)
def test_strict_answers_are_refused(
    server: LocalIssuer, body: bytes | dict[str, Any], reason: str, flavour: str
) -> None:
    """Each hostile or malformed answer is a 401 invalid_token with a clear reason."""
    with pytest.raises(InvalidToken, match=reason) as refused:
        verify(server, built(body), flavour)
    assert refused.value.status_code == 401


@pytest.mark.integration
@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize(
    "body",
    [
        dict(token_type="Bearer"),
        dict(token_type="bearer"),
        dict(token_type="access_token"),
        dict(token_type="urn:ietf:params:oauth:token-type:access_token"),
        dict(token_use="access_token"),
        dict(aud=None),  # RFC 7662: aud is optional
        dict(aud=["https://other.api", API]),
    ],
)
def test_access_token_answers_are_accepted(server: LocalIssuer, body: dict[str, Any], flavour: str) -> None:
    """Access-token types, and answers without aud, are accepted."""
    assert verify(server, built(body), flavour).subject == "user-1"


@pytest.mark.integration
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_dpop_answer_is_an_access_token_for_a_dpop_guard(server: LocalIssuer, flavour: str) -> None:
    """RFC 9449 §6.2: token_type "DPoP" with cnf.jkt is an access token, not refused as "not an access token"."""
    server.faults["/introspect"] = Fault(status=200, body=answer(token_type="DPoP", cnf={"jkt": "0" * 43}))
    # proof_of_possession=True: the binding is checked by the application (a
    # DPoP guard checks it in request_auth, and refuses it in a bare verify()).
    guard = server.guard(audience=API, proof_of_possession=True)
    token = f"opaque-{time.monotonic_ns()}"
    try:
        if flavour == "sync":
            claims = guard.verify_sync(token)
        else:

            async def run() -> TokenClaims:
                try:
                    return await guard.verify(token)
                finally:
                    await guard.aclose()

            claims = asyncio.run(run())
    finally:
        guard.close()
    assert claims["cnf"] == {"jkt": "0" * 43}


def test_duplicate_members_are_never_cached() -> None:
    """A refused duplicate-member answer is not a cached rejection: the next call asks again."""
    with LocalIssuer(algorithms=("ES256",)) as issuer:
        issuer.faults["/introspect"] = Fault(status=200, body=b'{"active": true, "active": true}')
        guard = issuer.guard(audience=API)
        for _ in range(2):
            with pytest.raises(InvalidToken):
                guard.verify_sync("opaque-token-value")
        assert issuer.requests["/introspect"] == 2


CONFIG = Introspection(endpoint="https://as.test/introspect", client_id="rs", audience=API, issuer="https://as.test")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)
members = st.dictionaries(
    st.sampled_from(["active", "exp", "nbf", "iat", "aud", "iss", "token_type", "token_use", "scope", "sub"]),
    json_values,
)


@given(members, st.floats(min_value=0, max_value=4e9))
def test_check_answer_never_raises(document: dict[str, Any], now: float) -> None:
    """Any JSON object: claims with a positive TTL only for an active, well-formed answer."""
    result = check_answer(document, CONFIG, now)
    if result.claims is not None:
        assert document["active"] is True
        assert result.ttl >= 0
    else:
        assert result.reason


@given(st.binary(max_size=300))
def test_interpret_introspection_never_crashes(body: bytes) -> None:
    """Any body: a result, or a TokenError (401 or 503), never another exception."""
    try:
        interpret_introspection(HttpReply(200, {}, body), CONFIG, time.time())
    except TokenError as error:
        assert error.status_code in (401, 503)
