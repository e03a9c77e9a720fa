"""WWW-Authenticate challenges and error rendering (RFC 6750 §3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenguard import (
    Challenge,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    MissingToken,
    ServiceUnavailable,
    parse_challenges,
)
from tokenguard.challenge import sanitize_error_text

SCOPE_CHARS = "".join(chr(c) for c in [0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F)])


@pytest.mark.parametrize(
    ("challenge", "header"),
    [
        (Challenge(realm="api"), 'Bearer realm="api"'),
        (Challenge(), "Bearer"),
        (
            Challenge(realm="example", error="invalid_token", error_description="The access token expired"),
            'Bearer realm="example", error="invalid_token", error_description="The access token expired"',
        ),
        (
            Challenge(realm="api", error="insufficient_scope", scope=("a", "b")),
            'Bearer realm="api", error="insufficient_scope", scope="a b"',
        ),
        (Challenge(realm='a "quoted" \\ realm'), 'Bearer realm="a \\"quoted\\" \\\\ realm"'),
        (
            Challenge(realm="api", extra=(("resource_metadata", "https://api/.well-known/oauth-protected-resource"),)),
            'Bearer realm="api", resource_metadata="https://api/.well-known/oauth-protected-resource"',
        ),
    ],
)
def test_challenge_rendering_and_round_trip(challenge: Challenge, header: str) -> None:
    """Challenges render as RFC 6750 §3 shows and parse back to themselves."""
    assert challenge.to_header() == header
    assert parse_challenges(header) == [challenge]


def test_description_is_reduced_to_the_rfc_charset() -> None:
    """Quotes, backslashes, CR/LF and non-ASCII never reach the header."""
    text = 'bad "token"\\\r\nSet-Cookie: x=1 é'
    header = Challenge(error="invalid_token", error_description=text).to_header()
    assert "\r" not in header and "\n" not in header and "é" not in header
    parsed = parse_challenges(header)[0]
    assert parsed.error_description == sanitize_error_text(text)


@given(st.text(max_size=100))
def test_any_description_yields_a_parseable_header(text: str) -> None:
    """Whatever text goes in, the header parses back and stays within the RFC charset."""
    header = Challenge(realm="api", error="invalid_token", error_description=text).to_header()
    parsed = parse_challenges(header)
    assert len(parsed) == 1
    assert parsed[0].error == "invalid_token"
    description = parsed[0].error_description or ""
    assert all(0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in description)


@given(st.text(max_size=60), st.lists(st.text(alphabet=SCOPE_CHARS, min_size=1, max_size=10), max_size=4))
def test_realm_and_scopes_round_trip(realm: str, scopes: list[str]) -> None:
    """Printable realms and RFC scope tokens survive a round trip through the header."""
    realm = "".join(c for c in realm if 0x20 <= ord(c) <= 0x7E)
    challenge = Challenge(realm=realm, error="insufficient_scope", scope=tuple(scopes))
    assert parse_challenges(challenge.to_header()) == [challenge]


def test_invalid_scope_token_refused() -> None:
    """A scope with a space or quote cannot be put in a challenge."""
    with pytest.raises(ValueError):
        Challenge(scope=("a b",))
    with pytest.raises(ValueError):
        Challenge(scope=('a"',))


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (MissingToken(), 401, None),
        (InvalidRequest("malformed"), 400, "invalid_request"),
        (InvalidToken("token expired"), 401, "invalid_token"),
        (InsufficientScope(("write",)), 403, "insufficient_scope"),
        (ServiceUnavailable("jwks down"), 503, "temporarily_unavailable"),
    ],
)
def test_errors_know_their_http_answer(error: object, status: int, code: str | None) -> None:
    """Each error carries its status, code and no-store headers."""
    assert error.status_code == status  # type: ignore[attr-defined]
    assert error.error_code == code  # type: ignore[attr-defined]
    headers = dict(error.headers("api"))  # type: ignore[attr-defined]
    assert headers["Cache-Control"] == "no-store"
    assert headers["Pragma"] == "no-cache"


def test_missing_token_challenge_has_no_error() -> None:
    """RFC 6750 §3.1: no error code when the request had no credentials."""
    header = dict(MissingToken().headers("api"))["WWW-Authenticate"]
    assert header == 'Bearer realm="api"'


def test_insufficient_scope_lists_needed_scopes() -> None:
    """The 403 challenge names every scope the route needs."""
    header = dict(InsufficientScope(("read", "write")).headers("api"))["WWW-Authenticate"]
    challenge = parse_challenges(header)[0]
    assert challenge.error == "insufficient_scope"
    assert challenge.scope == ("read", "write")


def test_service_unavailable_has_retry_after_and_no_challenge() -> None:
    """503 carries Retry-After and no WWW-Authenticate: the token is not at fault."""
    headers = dict(ServiceUnavailable("down", retry_after=7).headers("api"))
    assert headers["Retry-After"] == "7"
    assert "WWW-Authenticate" not in headers


def test_details_can_be_suppressed() -> None:
    """With details off, descriptions are generic."""
    error = InvalidToken("wrong audience")
    assert error.body(include_description=False) == {"error": "invalid_token", "error_description": "invalid token"}
    header = dict(error.headers("api", include_description=False))["WWW-Authenticate"]
    assert "wrong audience" not in header


@given(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    st.text(max_size=80),
    st.lists(st.text(alphabet=SCOPE_CHARS.replace(",", ""), min_size=1, max_size=10), max_size=3),
)
def test_header_round_trips_through_werkzeug(realm: str, description: str, scopes: list[str]) -> None:
    """Werkzeug's independent WWW-Authenticate parser reads back what we wrote."""
    from werkzeug.datastructures import WWWAuthenticate

    challenge = Challenge(realm=realm, error="invalid_token", error_description=description, scope=tuple(scopes))
    parsed = WWWAuthenticate.from_header(challenge.to_header())
    assert parsed is not None
    assert parsed.type == "bearer"
    assert parsed.parameters["realm"] == realm
    assert parsed.parameters["error"] == "invalid_token"
    if challenge.error_description:
        assert parsed.parameters["error_description"] == sanitize_error_text(description)
    if scopes:
        assert parsed.parameters["scope"] == " ".join(scopes)
