"""Cache-Control parsing, TTL decisions, and headers on authenticated responses."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenguard import CacheControl
from tokenguard.cachecontrol import document_ttl
from tokenguard.response import secure_headers


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("max-age=300", CacheControl(max_age=300)),
        ("public, max-age=60", CacheControl(max_age=60, public=True)),
        ("no-store", CacheControl(no_store=True)),
        ('max-age="120"', CacheControl(max_age=120)),
        ("max-age=abc", CacheControl(max_age=0)),
        ("max-age=-5", CacheControl(max_age=0)),
        ("MAX-AGE=10, Private", CacheControl(max_age=10, private=True)),
        ("must-revalidate, max-age=5", CacheControl(max_age=5, other=("must-revalidate",))),
        ("max-age=99999999999", CacheControl(max_age=2**31)),
        ("", CacheControl()),
    ],
)
def test_parse_cache_control(value: str, expected: CacheControl) -> None:
    """Directives parse into typed fields; invalid max-age means stale (RFC 9111 §4.2.1)."""
    assert CacheControl.from_header(value) == expected


@given(
    st.builds(CacheControl, max_age=st.none() | st.integers(0, 10**6), no_store=st.booleans(), private=st.booleans())
)
def test_cache_control_round_trip(cc: CacheControl) -> None:
    """to_header and from_header are inverses."""
    assert CacheControl.from_header(cc.to_header()) == cc


@given(st.text(max_size=100))
def test_cache_control_parser_never_raises(value: str) -> None:
    """Garbage upstream headers never crash the parser."""
    CacheControl.from_header(value)


@pytest.mark.parametrize(
    ("header", "age", "ttl"),
    [
        ("max-age=600", None, 600),
        ("max-age=600", "100", 500),
        ("max-age=10", None, 300),  # clamped to the minimum
        ("max-age=9999999", None, 86400),  # clamped to the maximum
        ("no-store", None, 300),
        (None, None, 1000),  # default
    ],
)
def test_document_ttl_bounds(header: str | None, age: str | None, ttl: float) -> None:
    """Upstream max-age (less Age) decides freshness, within bounds."""
    assert document_ttl(header, age, default=1000, minimum=300, maximum=86400) == ttl


def test_authenticated_response_gets_vary_and_no_store() -> None:
    """No Cache-Control: no-store is added; Vary: Authorization is merged."""
    headers, shareable = secure_headers([("Content-Type", "application/json"), ("Vary", "Accept-Encoding")])
    values = dict(headers)
    assert values["Vary"] == "Accept-Encoding, Authorization"
    assert values["Cache-Control"] == "no-store"
    assert shareable is False


def test_existing_vary_authorization_not_duplicated() -> None:
    """An existing Authorization in Vary is kept once."""
    headers, _ = secure_headers([("Vary", "authorization, Accept")])
    assert dict(headers)["Vary"] == "authorization, Accept"


def test_route_cache_control_is_kept() -> None:
    """A route's own private Cache-Control stays as it is."""
    headers, shareable = secure_headers([("Cache-Control", "private, max-age=30")])
    assert dict(headers)["Cache-Control"] == "private, max-age=30"
    assert not shareable


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("private", "private, max-age=60"), ("keep", "public, max-age=60"), ("no-store", "no-store")],
)
def test_public_policy(policy: str, expected: str) -> None:
    """public on an authenticated response is rewritten per policy."""
    headers, shareable = secure_headers([("Cache-Control", "public, max-age=60")], public_policy=policy)  # type: ignore[arg-type]
    assert dict(headers)["Cache-Control"] == expected
    assert shareable


def test_s_maxage_counts_as_shareable() -> None:
    """s-maxage lets shared caches store authorized responses (RFC 9111 §3.5): rewritten."""
    headers, shareable = secure_headers([("Cache-Control", "s-maxage=60")])
    assert shareable
    assert dict(headers)["Cache-Control"] == "private"


# ------------------------------------------------- raw (ASGI) and quick paths

from tokenguard.response import ResponsePolicy, has_merged_fields  # noqa: E402

_HEADER_NAMES = st.sampled_from(
    ["content-type", "Vary", "vary", "VARY", "Cache-Control", "cache-control", "x-varyy", "set-cookie", "etag"]
)
_HEADER_VALUES = st.sampled_from(
    ["Accept", "authorization, Accept", "*", "public, max-age=60", "private", "no-store", "s-maxage=5", "", "a=1"]
)


@given(st.lists(st.tuples(_HEADER_NAMES, _HEADER_VALUES), max_size=6), st.sampled_from(["private", "keep", "no-store"]))
def test_raw_headers_secured_like_text_headers(headers: list[tuple[str, str]], policy: str) -> None:
    """``secure_raw`` on ASGI byte pairs gives the headers ``secure_headers`` gives, names lowercased."""
    expected, _ = secure_headers(headers, public_policy=policy)  # type: ignore[arg-type]
    raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    secured = ResponsePolicy(public_cache_policy=policy).secure_raw(raw, "/p")  # type: ignore[arg-type]
    assert [(bytes(n).decode("latin-1").lower(), bytes(v).decode("latin-1")) for n, v in secured] == [
        (name.lower(), value) for name, value in expected
    ]


@given(st.lists(st.tuples(_HEADER_NAMES, _HEADER_VALUES), max_size=6))
def test_quick_path_matches_the_full_rules(headers: list[tuple[str, str]]) -> None:
    """``ResponsePolicy.quick`` answers only without Vary/Cache-Control, and then exactly as ``secure_headers``."""
    quick = ResponsePolicy.quick(headers)
    assert (quick is None) == has_merged_fields(headers)
    if quick is not None:
        assert quick == secure_headers(headers)[0]
    assert ResponsePolicy().secure(headers, "/p") == secure_headers(headers)[0]


def test_raw_headers_untouched_except_the_two_fields() -> None:
    """Other raw pairs pass through as the same objects; without Vary/Cache-Control the two fields are appended."""
    content_type = (b"content-type", b"application/json")
    length = [b"content-length", b"2"]
    secured = ResponsePolicy().secure_raw([content_type, length], "/p")
    assert secured[0] is content_type and secured[1] is length
    assert secured[2:] == [(b"vary", b"Authorization"), (b"cache-control", b"no-store")]
