"""Discovery and JWKS flows driven by hand with canned replies: no sockets, no threads, no clock.

Each test steps ``MetadataSource.metadata_flow`` or ``JWKSSource.keys_flow``
with :class:`tests.flowkit.Step`, checks every request it yields, and answers
it. The real-server tests in test_guard_integration.py cover the same rules
end to end; these pin the decisions exactly (which URL, when, what is kept).
"""

from __future__ import annotations

from typing import Any

import pytest

from tokenguard.errors import ServiceUnavailable
from tokenguard.sources import FetchSettings, JWKSSource, MetadataSource, discovery_urls

from .flowkit import Step, canned, ec_jwk, forbid_network, returns_at_once


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_network(monkeypatch)


ISSUER = "https://idp.test"
PATH_ISSUER = "https://idp.test/tenant/a"
JWKS_URI = "https://idp.test/jwks"
T0 = 1_800_000_000.0
SETTINGS = FetchSettings(min_ttl=300, max_ttl=3600, default_ttl=600, kid_refetch_cooldown=30, max_staleness=900)


def metadata(issuer: str = ISSUER, **members: Any) -> dict[str, Any]:
    return {"issuer": issuer, "jwks_uri": JWKS_URI, **members}


# ------------------------------------------------------------------ discovery: URL order


def test_discovery_urls_without_a_path_try_rfc8414_then_oidc() -> None:
    """An issuer without a path: RFC 8414 §3.1 first, then OIDC Discovery §4."""
    assert discovery_urls(ISSUER) == [
        "https://idp.test/.well-known/oauth-authorization-server",
        "https://idp.test/.well-known/openid-configuration",
    ]


def test_discovery_urls_with_a_path_insert_then_append() -> None:
    """An issuer with a path: OAuth inserted, OIDC inserted, OIDC appended (RFC 8414 §5)."""
    assert discovery_urls(PATH_ISSUER + "/") == [
        "https://idp.test/.well-known/oauth-authorization-server/tenant/a",
        "https://idp.test/.well-known/openid-configuration/tenant/a",
        "https://idp.test/tenant/a/.well-known/openid-configuration",
    ]


def test_discovery_falls_back_on_404_in_order_and_stops_at_the_first_document() -> None:
    """Each 4xx moves to the next well-known form; the first good document ends the flow."""
    source = MetadataSource(PATH_ISSUER, SETTINGS)
    step = Step(source.metadata_flow(T0))
    urls = discovery_urls(PATH_ISSUER)
    step.request("GET", urls[0])
    assert step.effect.purpose == "discovery"
    assert step.effect.coalesce_key == f"GET {urls[0]}"
    step.reply(404)
    step.request("GET", urls[1])
    step.reply(410)
    step.request("GET", urls[2])
    step.reply(200, metadata(PATH_ISSUER))
    assert step.result() == metadata(PATH_ISSUER)
    assert len(step.effects) == 3


def test_discovery_uses_the_first_location_that_answers() -> None:
    """When the RFC 8414 location answers, the OIDC one is never asked."""
    step = Step(MetadataSource(ISSUER, SETTINGS).metadata_flow(T0))
    step.request("GET", "https://idp.test/.well-known/oauth-authorization-server")
    step.reply(200, metadata())
    assert step.result()["jwks_uri"] == JWKS_URI


def test_discovery_with_a_configured_url_asks_only_there() -> None:
    """``discovery_url`` replaces the well-known search."""
    source = MetadataSource(ISSUER, SETTINGS, discovery_url="https://idp.test/custom/meta")
    step = Step(source.metadata_flow(T0))
    step.request("GET", "https://idp.test/custom/meta")
    with pytest.raises(ServiceUnavailable, match="no discovery document found"):
        step.reply(404)


def test_discovery_every_location_missing_is_503_naming_the_last_status() -> None:
    """All locations 4xx: ServiceUnavailable with the last status, and the failure is recorded."""
    source = MetadataSource(ISSUER, SETTINGS)
    step = Step(source.metadata_flow(T0))
    step.reply(404)
    with pytest.raises(ServiceUnavailable, match=r"last status 403"):
        step.reply(403)
    assert source.state.failures == 1
    assert source.state.value is None


@pytest.mark.parametrize("status", [500, 502, 503, 301, 302, 204])
def test_discovery_server_error_or_redirect_stops_the_search(status: int) -> None:
    """A 5xx, a redirect or any non-200 that is not 4xx is the server's fault: 503 at once, no next URL."""
    step = Step(MetadataSource(ISSUER, SETTINGS).metadata_flow(T0))
    with pytest.raises(ServiceUnavailable, match=f"HTTP {status}"):
        step.reply(status, metadata())
    assert len(step.effects) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"https://idp.test"', "not a JSON object"),
        (b"[" * 100_000, "not valid JSON"),
    ],
)
def test_discovery_bad_json_is_503(body: bytes, message: str) -> None:
    """A body that is not a JSON object is the upstream's fault: 503, never a crash."""
    step = Step(MetadataSource(ISSUER, SETTINGS).metadata_flow(T0))
    with pytest.raises(ServiceUnavailable, match=message):
        step.reply(200, body)


@pytest.mark.parametrize(
    "named",
    ["https://evil.test", ISSUER + "/", "HTTPS://IDP.TEST", None, 42, ["https://idp.test"]],
)
def test_discovery_issuer_mismatch_is_refused(named: object) -> None:
    """RFC 8414 §3.3: the document's issuer must equal the configured one exactly."""
    source = MetadataSource(ISSUER, SETTINGS)
    step = Step(source.metadata_flow(T0))
    with pytest.raises(ServiceUnavailable, match="names another issuer"):
        step.reply(200, {"issuer": named, "jwks_uri": JWKS_URI})
    assert source.state.value is None


# ------------------------------------------------------------------ discovery: freshness and last good


@pytest.mark.parametrize(
    ("headers", "ttl"),
    [
        ({}, 600),  # default_ttl when the upstream says nothing
        ({"Cache-Control": "max-age=1200"}, 1200),
        ({"Cache-Control": "max-age=10"}, 300),  # raised to min_ttl
        ({"Cache-Control": "max-age=31536000"}, 3600),  # lowered to max_ttl
        ({"Cache-Control": "max-age=1200", "Age": "1000"}, 300),  # RFC 9111 §4.2.3: less Age, then bounded
        ({"Cache-Control": "max-age=2000", "Age": "500"}, 1500),
        ({"Cache-Control": "no-store"}, 300),
        ({"Cache-Control": "max-age=banana"}, 300),  # RFC 9111 §4.2.1: invalid means stale
    ],
)
def test_discovery_freshness_follows_max_age_within_bounds(headers: dict[str, str], ttl: float) -> None:
    """The document stays fresh for max-age less Age, clamped to [min_ttl, max_ttl]."""
    source = MetadataSource(ISSUER, SETTINGS)
    Step(source.metadata_flow(T0)).reply(200, metadata(), headers)
    assert source.state.fresh_until == T0 + ttl
    assert returns_at_once(source.metadata_flow(T0 + ttl - 1)) == metadata()
    Step(source.metadata_flow(T0 + ttl)).request("GET", "https://idp.test/.well-known/oauth-authorization-server")


def test_discovery_keeps_the_last_good_document_until_max_staleness() -> None:
    """A failed refresh serves the last good document for max_staleness past its freshness, then 503."""
    source = MetadataSource(ISSUER, SETTINGS)
    Step(source.metadata_flow(T0)).reply(200, metadata(), {"Cache-Control": "max-age=300"})
    stale = T0 + 300 + 10
    step = Step(source.metadata_flow(stale))
    step.reply(503)
    assert step.result() == metadata()
    assert source.state.failures == 1
    # Past max_staleness the old document may no longer serve.
    step = Step(source.metadata_flow(T0 + 300 + 900 + 1))
    with pytest.raises(ServiceUnavailable):
        step.fail()


def test_discovery_failure_waits_failed_retry_interval_before_asking_again() -> None:
    """After a failure, a new attempt waits failed_retry_interval: no request, 503 with Retry-After."""
    settings = FetchSettings(failed_retry_interval=5)
    source = MetadataSource(ISSUER, settings)
    with pytest.raises(ServiceUnavailable):
        Step(source.metadata_flow(T0)).fail()
    with pytest.raises(ServiceUnavailable) as refused:
        returns_at_once(source.metadata_flow(T0 + 1))
    assert refused.value.retry_after == 4
    Step(source.metadata_flow(T0 + 5)).request("GET")


def test_discovery_a_transport_error_counts_as_a_failure() -> None:
    """A transport error thrown in by the runner ends the search (it is not a 4xx)."""
    source = MetadataSource(ISSUER, SETTINGS)
    step = Step(source.metadata_flow(T0))
    with pytest.raises(ServiceUnavailable, match="upstream request failed"):
        step.fail()
    assert len(step.effects) == 1
    assert source.state.failures == 1


@pytest.mark.parametrize(
    ("value", "outcome"),
    [
        ("https://idp.test/introspect", "https://idp.test/introspect"),
        (None, None),
        (42, ServiceUnavailable),
        ("http://idp.test/introspect", ServiceUnavailable),  # plain http off loopback
        ("javascript:alert(1)", ServiceUnavailable),
        ("https://idp.test/x#frag", ServiceUnavailable),
    ],
)
def test_endpoint_from_metadata_is_validated(value: object, outcome: object) -> None:
    """An endpoint named in metadata must be an https URL (or absent); anything else is 503."""
    members = {} if value is None else {"introspection_endpoint": value}
    step = Step(MetadataSource(ISSUER, SETTINGS).endpoint_flow("introspection_endpoint", T0))
    if outcome is ServiceUnavailable:
        with pytest.raises(ServiceUnavailable, match="introspection_endpoint"):
            step.reply(200, metadata(**members))
    else:
        step.reply(200, metadata(**members))
        assert step.result() == outcome


# ------------------------------------------------------------------ JWKS


def jwks(*kids: str) -> dict[str, Any]:
    return {"keys": [ec_jwk(kid) for kid in kids]}


def fetched(source: JWKSSource, now: float, document: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    """Answer a fetch the flow must make; return the key set it returns."""
    step = Step(source.keys_flow(None, now))
    step.request("GET", JWKS_URI)
    return step.reply(200, document, headers).result()


def test_jwks_first_fetch_asks_for_a_jwk_set_and_keeps_it() -> None:
    """The first keys_flow fetches jwks_uri with a JWK Set Accept header; the set is then at hand."""
    source = JWKSSource(SETTINGS, jwks_uri=JWKS_URI)
    assert source.keys_at_hand("a", T0) is None
    step = Step(source.keys_flow("a", T0))
    request = step.request("GET", JWKS_URI)
    assert ("Accept", "application/jwk-set+json, application/json") in request.headers
    assert request.purpose == "jwks" and request.coalesce_key == f"GET {JWKS_URI}"
    keys = step.reply(200, jwks("a", "b")).result()
    assert keys.has_kid("a") and keys.has_kid("b") and len(keys) == 2
    assert source.keys_at_hand("a", T0 + 1) is keys
    assert returns_at_once(source.keys_flow("b", T0 + 1)) is keys
    assert len(source.current_thumbprints) == 2


def test_jwks_through_discovery_asks_metadata_first() -> None:
    """Without a configured jwks_uri the flow discovers it, then fetches it."""
    source = JWKSSource(SETTINGS, metadata=MetadataSource(ISSUER, SETTINGS))
    step = Step(source.keys_flow("a", T0))
    step.request("GET", "https://idp.test/.well-known/oauth-authorization-server")
    step.reply(200, metadata())
    step.request("GET", JWKS_URI)
    assert step.reply(200, jwks("a")).result().has_kid("a")


@pytest.mark.parametrize(
    ("members", "message"),
    [({"jwks_uri": None}, "no jwks_uri"), ({"jwks_uri": "http://idp.test/jwks"}, "jwks_uri is not acceptable")],
)
def test_jwks_through_discovery_without_a_usable_jwks_uri_is_503(members: dict[str, Any], message: str) -> None:
    """Metadata without a jwks_uri, or with a plain-http one, fetches nothing more and answers 503."""
    source = JWKSSource(SETTINGS, metadata=MetadataSource(ISSUER, SETTINGS))
    step = Step(source.keys_flow("a", T0))
    with pytest.raises(ServiceUnavailable, match=message):
        step.reply(200, {**metadata(), **members})
    assert len(step.effects) == 1


@pytest.mark.parametrize(
    ("headers", "ttl"),
    [
        ({}, 600),
        ({"Cache-Control": "public, max-age=1800"}, 1800),
        ({"Cache-Control": "max-age=5"}, 300),
        ({"Cache-Control": "max-age=99999999999"}, 3600),
        ({"Cache-Control": "no-cache"}, 300),
        ({"Cache-Control": "max-age=900", "Age": "800"}, 300),
    ],
)
def test_jwks_freshness_follows_max_age_within_bounds(headers: dict[str, str], ttl: float) -> None:
    """Cache-Control max-age (less Age) sets the key set's freshness, bounded by min_ttl and max_ttl."""
    source = JWKSSource(SETTINGS, jwks_uri=JWKS_URI)
    keys = fetched(source, T0, jwks("a"), headers)
    assert source.keys_at_hand("a", T0 + ttl - 1) is keys
    assert source.keys_at_hand("a", T0 + ttl) is None
    Step(source.keys_flow("a", T0 + ttl)).request("GET", JWKS_URI)


def test_jwks_unknown_kid_refetches_once_per_cooldown() -> None:
    """An unknown kid refetches at once; more unknown kids within the cooldown fetch nothing."""
    source = JWKSSource(SETTINGS, jwks_uri=JWKS_URI)
    old = fetched(source, T0, jwks("a"))
    step = Step(source.keys_flow("x", T0 + 1))
    step.request("GET", JWKS_URI)
    assert not step.reply(200, jwks("a")).result().has_kid("x")
    # Within the 30 s cooldown: any other unknown kid is answered from the set at hand.
    for offset, kid in ((2, "y"), (15, "z"), (30.9, "x")):
        keys = returns_at_once(source.keys_flow(kid, T0 + offset))
        assert not keys.has_kid(kid)
    assert old is not None
    # The cooldown counts from the refetch the unknown kid caused.
    Step(source.keys_flow("y", T0 + 31)).request("GET", JWKS_URI)


def test_jwks_rotation_is_seen_at_once_and_removed_keys_leave_the_thumbprints() -> None:
    """A new kid in a token refetches and finds the rotated key; withdrawn keys drop out."""
    source = JWKSSource(SETTINGS, jwks_uri=JWKS_URI)
    fetched(source, T0, jwks("old"))
    before = source.current_thumbprints
    step = Step(source.keys_flow("new", T0 + 5))
    step.request("GET", JWKS_URI)
    keys = step.reply(200, jwks("new")).result()
    assert keys.has_kid("new") and not keys.has_kid("old")
    assert source.current_thumbprints.isdisjoint(before)
    assert source.keys_at_hand("new", T0 + 6) is keys


def test_jwks_keeps_the_last_good_key_set_while_the_issuer_is_down() -> None:
    """A failed refresh serves the last good keys until max_staleness past freshness, then 503."""
    source = JWKSSource(SETTINGS, jwks_uri=JWKS_URI)
    keys = fetched(source, T0, jwks("a"), {"Cache-Control": "max-age=300"})
    step = Step(source.keys_flow("a", T0 + 400))
    assert step.reply(503).result() is keys
    # Within failed_retry_interval (1 s) no new attempt is made at all.
    assert returns_at_once(source.keys_flow("a", T0 + 400.5)) is keys
    step = Step(source.keys_flow("a", T0 + 402))
    assert step.fail().result() is keys
    with pytest.raises(ServiceUnavailable, match="signing keys unavailable|request failed"):
        Step(source.keys_flow("a", T0 + 300 + 900 + 1)).fail()


def test_jwks_down_from_the_start_is_503_with_retry_after() -> None:
    """Nothing ever fetched and the endpoint failing: 503, and no second request before the retry interval."""
    source = JWKSSource(FetchSettings(failed_retry_interval=3), jwks_uri=JWKS_URI)
    with pytest.raises(ServiceUnavailable, match="JWKS answered HTTP 500"):
        Step(source.keys_flow("a", T0)).reply(500)
    # Within the retry interval the 503 names the same cause as the failed fetch.
    with pytest.raises(ServiceUnavailable, match="JWKS answered HTTP 500") as refused:
        returns_at_once(source.keys_flow("a", T0 + 1))
    assert refused.value.retry_after == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>", "not valid JSON"),
        (b"[]", "not a JSON object"),
        ({"keys": []}, "no usable key"),
        ({"keys": "a"}, "JWKS rejected"),
        ({"nokeys": []}, "JWKS rejected"),
        ({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}, "no usable key"),  # symmetric keys never fetched
        ({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "bad"}]}, "no usable key"),
    ],
)
def test_jwks_unusable_documents_are_503_and_keep_nothing(body: object, message: str) -> None:
    """A JWK Set that is not JSON, not a set, or holds no usable key is the upstream's fault."""
    source = JWKSSource(SETTINGS, jwks_uri=JWKS_URI)
    with pytest.raises(ServiceUnavailable, match=message):
        Step(source.keys_flow("a", T0)).reply(200, body)
    assert source.state.value is None and source.current_thumbprints == frozenset()


def test_jwks_an_unusable_refresh_keeps_the_previous_keys() -> None:
    """A refresh that returns garbage does not replace good keys: the last good set keeps serving."""
    source = JWKSSource(SETTINGS, jwks_uri=JWKS_URI)
    keys = fetched(source, T0, jwks("a"))
    step = Step(source.keys_flow("a", T0 + 700))
    assert step.reply(200, {"keys": []}).result() is keys
    assert source.keys_at_hand("a", T0 + 700) is None  # stale, so the next request tries again


def test_jwks_too_many_keys_is_refused() -> None:
    """max_keys bounds the set a hostile or broken endpoint can make us parse."""
    source = JWKSSource(FetchSettings(max_keys=2), jwks_uri=JWKS_URI)
    with pytest.raises(ServiceUnavailable, match="JWKS rejected"):
        Step(source.keys_flow("a", T0)).reply(200, jwks("a", "b", "c"))


def test_jwks_a_reply_shared_by_coalesced_callers_is_parsed_once() -> None:
    """Two flows given the same reply object (a coalesced call) end with the very same key set."""
    source = JWKSSource(SETTINGS, jwks_uri=JWKS_URI)
    first = Step(source.keys_flow("a", T0))
    second = Step(source.keys_flow("a", T0))
    assert first.request() == second.request()
    reply = canned(200, jwks("a"))
    keys = first.send_reply(reply).result()
    assert second.send_reply(reply).result() is keys
