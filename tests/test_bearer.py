"""Bearer extraction (RFC 6750 §2): tables of good and hostile inputs, plus properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenguard import InvalidRequest, InvalidToken, MissingToken, TokenError, extract_token, parse_authorization

B64TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/"


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER abc", "abc"),
        ("Bearer   abc", "abc"),  # 1*SP
        ("  Bearer abc  ", "abc"),  # OWS around the field value
        ("Bearer a.b.c", "a.b.c"),
        ("Bearer mF_9.B5f-4.1JqM", "mF_9.B5f-4.1JqM"),  # RFC 6750 §2.1 example
        ("Bearer abc==", "abc=="),
        ("Bearer a~b+c/d", "a~b+c/d"),
    ],
)
def test_valid_headers_yield_the_token(header: str, token: str) -> None:
    """Well-formed Bearer credentials give back exactly the token."""
    assert parse_authorization(header) == token


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Bearer    ",
        "Bearer a b",
        "Bearer a,b",
        "Bearer =abc",
        "Bearer ab=c",
        'Bearer "abc"',
        "Bearer abc\x00",
        "Bearer ab\tc",
        "Bearer abc\r\nX-Evil: 1",
        "Bearer ábc",
        "Bearer\tabc",
        "Bearerabc",
        "Bearer a%20b",
        "Bearer {}",
        "",
        " ",
        "\x00",
    ],
)
def test_malformed_bearer_is_invalid_request(header: str) -> None:
    """Malformed or empty Bearer credentials are 400 invalid_request, never accepted."""
    with pytest.raises(InvalidRequest) as info:
        parse_authorization(header)
    assert info.value.status_code == 400
    assert info.value.error_code == "invalid_request"


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Digest realm=x", "DPoP abc", "Negotiate abc"])
def test_other_schemes_are_not_bearer_credentials(header: str) -> None:
    """Another scheme means the request carries no Bearer token at all."""
    assert parse_authorization(header) is None


def test_no_credentials_is_missing_token() -> None:
    """No header, query or form token: 401 with no error code (RFC 6750 §3.1)."""
    with pytest.raises(MissingToken) as info:
        extract_token()
    assert info.value.status_code == 401
    assert info.value.error_code is None
    assert info.value.challenge("api") is not None
    assert info.value.challenge("api").to_header() == 'Bearer realm="api"'  # type: ignore[union-attr]


def test_two_authorization_headers_are_rejected() -> None:
    """Two Authorization headers are ambiguous: 400."""
    with pytest.raises(InvalidRequest):
        extract_token(["Bearer a", "Bearer b"])


def test_query_token_disabled_by_default() -> None:
    """A token in the query string is refused unless enabled."""
    with pytest.raises(InvalidRequest):
        extract_token(query_tokens=["abc"])
    assert extract_token(query_tokens=["abc"], allow_query=True) == "abc"


def test_form_token_disabled_by_default() -> None:
    """A token in the form body is refused unless enabled."""
    with pytest.raises(InvalidRequest):
        extract_token(form_tokens=["abc"])
    assert extract_token(form_tokens=["abc"], allow_form=True) == "abc"


@pytest.mark.parametrize(
    ("authorization", "query", "form"),
    [
        (["Bearer a"], ["b"], []),
        (["Bearer a"], [], ["b"]),
        ([], ["a", "b"], []),
        ([], ["a"], ["b"]),
    ],
)
def test_two_token_sources_are_rejected(authorization: list[str], query: list[str], form: list[str]) -> None:
    """More than one token, from any mix of places, is 400 (RFC 6750 §3.1)."""
    with pytest.raises(InvalidRequest):
        extract_token(authorization, query, form, allow_query=True, allow_form=True)


@pytest.mark.parametrize("value", ["", "a b", "a\nb", "é"])
def test_bad_query_tokens_are_invalid_request(value: str) -> None:
    """Empty or malformed query tokens are 400 even when query tokens are allowed."""
    with pytest.raises(InvalidRequest):
        extract_token(query_tokens=[value], allow_query=True)


def test_size_limit_boundary() -> None:
    """A token at the limit passes; one byte more is refused before parsing."""
    assert parse_authorization("Bearer " + "a" * 100, max_token_bytes=100) == "a" * 100
    with pytest.raises(InvalidToken):
        parse_authorization("Bearer " + "a" * 101, max_token_bytes=100)


def test_huge_header_is_bounded() -> None:
    """A multi-megabyte header is refused as oversized, not scanned."""
    with pytest.raises(InvalidToken):
        parse_authorization("Bearer " + "a" * 5_000_000)
    with pytest.raises(InvalidRequest):
        parse_authorization("Bearer" + "\x00" * 5_000_000)
    assert parse_authorization("Basic " + "a" * 5_000_000) is None


@given(st.text(alphabet=B64TOKEN_CHARS, min_size=1, max_size=200), st.integers(0, 3))
def test_any_b64token_round_trips(token: str, padding: int) -> None:
    """Every b64token (RFC 6750 §2.1) comes back unchanged."""
    token = token + "=" * padding
    assert parse_authorization(f"Bearer {token}") == token


@given(st.text(max_size=300))
def test_arbitrary_headers_never_crash(header: str) -> None:
    """Any header value is a token, ``None``, or a TokenError: never another exception."""
    try:
        result = parse_authorization(header)
    except TokenError:
        return
    assert result is None or result in header


@given(st.lists(st.text(max_size=50), max_size=3), st.lists(st.text(max_size=50), max_size=3))
def test_arbitrary_requests_never_crash(authorization: list[str], query: list[str]) -> None:
    """Any combination of sources yields one token or a TokenError."""
    try:
        token = extract_token(authorization, query, allow_query=True)
    except TokenError:
        return
    assert isinstance(token, str) and token


# ------------------------------------------------------- the common-form fast path

from tokenguard.bearer import bearer_token_bytes, parameter_tokens, query_may_hold_token  # noqa: E402


def _full_parse(value: bytes, max_token_bytes: int) -> str | None | type[TokenError]:
    try:
        return parse_authorization(value.decode("latin-1"), max_token_bytes=max_token_bytes)
    except TokenError as error:
        return type(error)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"Bearer abc.def-_~+/==", "abc.def-_~+/=="),
        (b"bearer abc", "abc"),
        (b"BEARER abc", "abc"),
        (b"Bearer  abc", None),  # two spaces: left to the full parse (which accepts it)
        (b"Bearer abc ", None),  # trailing space: the full parse strips it
        (b" Bearer abc", None),
        (b"Bearer\tabc", None),
        (b"Bearer ", None),
        (b"Bearer ===", None),  # no character before the padding
        (b"Bearer a=b", None),  # "=" only at the end
        (b"Bearer a,b", None),
        (b"Bearer \xe9t\xe9", None),
        (b"Basic abc", None),
        (b"Bearerabc", None),
        (b"", None),
    ],
)
def test_common_form_is_recognised_exactly(value: bytes, expected: str | None) -> None:
    """Only ``Bearer <b64token>`` with one space is taken by the fast path; the rest goes to the full parse."""
    assert bearer_token_bytes(value) == expected


def test_common_form_leaves_oversized_tokens_to_the_full_parse() -> None:
    """A token over the limit is not returned: the full parse refuses it as invalid_token."""
    assert bearer_token_bytes(b"Bearer " + b"a" * 11, max_token_bytes=10) is None
    assert bearer_token_bytes(b"Bearer " + b"a" * 10, max_token_bytes=10) == "a" * 10
    assert _full_parse(b"Bearer " + b"a" * 11, 10) is InvalidToken


_HEADER_BYTES = st.one_of(
    st.binary(max_size=40),
    st.builds(
        lambda scheme, sep, body: scheme + sep + body,
        st.sampled_from([b"Bearer", b"bearer", b"BeArEr", b"Basic", b"Bearer=", b""]),
        st.sampled_from([b" ", b"  ", b"\t", b"", b" \t"]),
        st.text(alphabet='AZaz09-._~+/= \t,"\\\xe9', max_size=30).map(lambda t: t.encode("latin-1")),
    ),
)


@given(_HEADER_BYTES, st.integers(min_value=1, max_value=40))
def test_common_form_agrees_with_the_full_parse(value: bytes, limit: int) -> None:
    """Whenever the fast path returns a token, the full RFC 6750 parse returns the same token."""
    token = bearer_token_bytes(value, max_token_bytes=limit)
    if token is not None:
        assert _full_parse(value, limit) == token


@given(st.one_of(st.binary(max_size=60), st.text(max_size=60)))
def test_query_without_token_spelling_holds_no_token(query: str | bytes) -> None:
    """``query_may_hold_token`` is False only when ``parameter_tokens`` finds nothing."""
    if not query_may_hold_token(query):
        assert parameter_tokens(query) == []


@pytest.mark.parametrize("query", ["access_token=x", "a=1&access%5Ftoken=x", b"access_token=", b"%61ccess_token=x"])
def test_query_with_a_token_spelling_is_parsed(query: str | bytes) -> None:
    """Any spelling of ``access_token`` sends the query to the full parse."""
    assert query_may_hold_token(query)
    assert parameter_tokens(query)
