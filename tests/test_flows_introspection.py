"""RFC 7662 introspection flow driven by hand with canned answers: no sockets.

``introspect_flow`` yields one POST (after discovery when the endpoint comes
from metadata) and interprets the answer. Every answer either becomes an
:class:`IntrospectionResult` or a :class:`ServiceUnavailable`, never anything else.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenguard.errors import ServiceUnavailable
from tokenguard.introspection import Introspection, IntrospectionResult, introspect_flow
from tokenguard.sources import FetchSettings, MetadataSource

from .flowkit import Step, forbid_network


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_network(monkeypatch)


ENDPOINT = "https://idp.test/introspect"
ISSUER = "https://idp.test"
T0 = 1_800_000_000.0
CONFIG = Introspection(
    endpoint=ENDPOINT,
    client_id="rs:1",
    client_secret="s3cr3t: with+special/chars%",
    issuer=ISSUER,
    audience=("https://api.test",),
    cache_ttl=60,
    negative_ttl=10,
)


def ask(answer: object, config: Introspection = CONFIG, status: int = 200, now: float = T0) -> IntrospectionResult:
    step = Step(introspect_flow("opaque-token", config, None, now, coalesce_key="k"))
    step.request("POST", config.endpoint)
    return step.reply(status, answer).result()


def test_request_is_a_form_post_with_basic_auth_form_encoded_first() -> None:
    """RFC 7662 §2.1 POST; client_secret_basic encodes id and secret per RFC 6749 §2.3.1 before base64."""
    step = Step(introspect_flow("tok;en&x=1", CONFIG, None, T0, coalesce_key="key-1"))
    request = step.request("POST", ENDPOINT)
    assert request.form == (("token", "tok;en&x=1"), ("token_type_hint", "access_token"))
    (name, value), *rest = request.headers
    assert name == "Authorization" and rest == []
    assert base64.b64decode(value.removeprefix("Basic ")) == b"rs%3A1:s3cr3t%3A+with%2Bspecial%2Fchars%25"
    assert request.coalesce_key == "key-1" and request.purpose == "introspection"
    assert request.max_bytes == CONFIG.max_response_bytes
    assert "tok;en" not in repr(request)  # the form (with the token) is left out of the repr


def test_request_with_client_secret_post_puts_credentials_in_the_form() -> None:
    """client_secret_post: credentials in the body, no Authorization header; no hint when None."""
    config = Introspection(
        endpoint=ENDPOINT, client_id="rs", client_secret="pw", auth_method="client_secret_post", token_type_hint=None
    )
    request = Step(introspect_flow("t", config, None, T0, coalesce_key=None)).request("POST")
    assert request.form == (("token", "t"), ("client_id", "rs"), ("client_secret", "pw"))
    assert request.headers == ()


def test_active_answer_becomes_claims_cached_no_longer_than_exp() -> None:
    """An active answer gives claims; its TTL is min(cache_ttl, exp - now)."""
    result = ask({"active": True, "sub": "u1", "scope": "read write", "exp": T0 + 30, "iss": ISSUER})
    assert result.claims is not None
    assert result.claims.subject == "u1" and result.claims.scopes == {"read", "write"}
    assert result.ttl == 30
    assert ask({"active": True, "exp": T0 + 3600}).ttl == 60
    assert ask({"active": True}).ttl == 60


@pytest.mark.parametrize(
    ("answer", "reason", "ttl"),
    [
        ({"active": False}, "not active", 10),
        ({}, "not active", 10),
        ({"active": "true"}, "not active", 10),  # only the JSON boolean true is active
        ({"active": 1}, "not active", 10),
        ({"active": True, "exp": T0 - 1}, "expired", 10),
        ({"active": True, "exp": "soon"}, "malformed exp", 10),
        ({"active": True, "nbf": T0 + 60}, "not yet valid", 0),
        ({"active": True, "iss": "https://evil.test"}, "wrong issuer", 10),
        ({"active": True, "aud": "https://other.test"}, "wrong audience", 10),
        ({"active": True, "aud": ["https://other.test", 7]}, "wrong audience", 10),
        ({"active": True, "aud": {"https://api.test": 1}}, "wrong audience", 10),
    ],
)
def test_inactive_or_unacceptable_answers(answer: dict[str, Any], reason: str, ttl: float) -> None:
    """Inactive, expired, not yet valid, another issuer or audience: no claims, a short negative TTL."""
    result = ask(answer)
    assert result.claims is None
    assert reason in result.reason
    assert result.ttl == ttl


def test_audience_in_a_list_is_accepted() -> None:
    """``aud`` as a list is accepted when it holds a configured audience."""
    assert ask({"active": True, "aud": ["https://other.test", "https://api.test"]}).claims is not None


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (500, {"active": True}, "HTTP 500"),
        (401, {"error": "invalid_client"}, "HTTP 401"),  # our credentials are wrong: not the token's fault
        (302, b"", "HTTP 302"),
        (200, b"<html>", "not valid JSON"),
        (200, b"[true]", "not a JSON object"),
        (200, b"null", "not a JSON object"),
    ],
)
def test_broken_answers_are_503(status: int, body: object, message: str) -> None:
    """RFC 7662 answers are 200 + a JSON object; anything else is the server's fault: 503, never 401."""
    with pytest.raises(ServiceUnavailable, match=message):
        ask(body, status=status)


def test_a_transport_failure_reaches_the_caller_as_503() -> None:
    """A transport error thrown in by the runner is not swallowed."""
    step = Step(introspect_flow("t", CONFIG, None, T0, coalesce_key=None))
    with pytest.raises(ServiceUnavailable, match="upstream request failed"):
        step.fail()


def test_endpoint_discovered_from_metadata() -> None:
    """Without a configured endpoint the flow reads introspection_endpoint from the issuer's metadata."""
    config = Introspection(issuer=ISSUER, client_id="rs", client_secret="pw")
    metadata = MetadataSource(ISSUER, FetchSettings())
    step = Step(introspect_flow("t", config, metadata, T0, coalesce_key=None))
    step.request("GET", "https://idp.test/.well-known/oauth-authorization-server")
    step.reply(200, {"issuer": ISSUER, "introspection_endpoint": "https://idp.test/oauth/introspect"})
    step.request("POST", "https://idp.test/oauth/introspect")
    assert step.reply(200, {"active": True, "sub": "u"}).result().claims is not None
    # The metadata is now fresh: the next introspection goes straight to the endpoint.
    again = Step(introspect_flow("t2", config, metadata, T0 + 1, coalesce_key=None))
    again.request("POST", "https://idp.test/oauth/introspect")


def test_issuer_without_an_introspection_endpoint_answers_unsupported() -> None:
    """Metadata without introspection_endpoint: an inactive result, no POST anywhere."""
    config = Introspection(issuer=ISSUER, client_id="rs", client_secret="pw")
    step = Step(introspect_flow("t", config, MetadataSource(ISSUER, FetchSettings()), T0, coalesce_key=None))
    result = step.reply(200, {"issuer": ISSUER}).result()
    assert result.claims is None and "not supported" in result.reason
    assert len(step.effects) == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
answers = st.dictionaries(
    st.sampled_from(["active", "exp", "nbf", "iat", "iss", "aud", "scope", "scp", "sub", "client_id", "x"]),
    json_values,
    max_size=8,
)


@given(answers)
def test_any_json_answer_is_a_result(answer: dict[str, Any]) -> None:
    """Any JSON object answer becomes a result: claims only when ``active`` is exactly true."""
    result = ask(answer)
    assert result.ttl >= 0
    if result.claims is not None:
        assert answer["active"] is True


@given(st.binary(max_size=200), st.integers(min_value=100, max_value=599))
def test_any_body_and_status_is_a_result_or_503(body: bytes, status: int) -> None:
    """Any bytes with any status: an IntrospectionResult or ServiceUnavailable, nothing else."""
    try:
        result = ask(body, status=status)
    except ServiceUnavailable:
        return
    assert status == 200
    assert isinstance(json.loads(body), dict)
    assert isinstance(result, IntrospectionResult)
