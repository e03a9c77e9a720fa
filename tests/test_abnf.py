"""The one RFC 9110 token / quoted-string grammar (tokenguard._abnf): tables, round trips, hostile input."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenguard import _abnf
from tokenguard._abnf import QUOTED_CONTENT, QUOTED_STRING, TOKEN, is_token, quote, unescape, unquote
from tokenguard.cachecontrol import CacheControl
from tokenguard.challenge import Challenge, parse_challenges

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# HTAB / SP / VCHAR / obs-text: what a quoted-string can carry (RFC 9110 §5.6.4).
QUOTABLE = "\t" + "".join(map(chr, range(0x20, 0x7F))) + "".join(map(chr, range(0x80, 0x100)))
NOT_QUOTABLE = "".join(chr(c) for c in (*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F)) + "\u0100\u2028\U0001f600"

tokens = st.text(alphabet=TCHARS, min_size=1)
quotable_text = st.text(alphabet=QUOTABLE)
# A quoted-string built from its parts: qdtext and quoted-pairs (which may escape anything quotable).
qdtext = st.sampled_from([c for c in QUOTABLE if c not in '"\\'])
quoted_pair = st.sampled_from(QUOTABLE).map(lambda c: "\\" + c)
quoted_strings = st.lists(qdtext | quoted_pair).map(lambda parts: '"' + "".join(parts) + '"')


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Bearer", True),
        ("max-age", True),
        ("x!#$%&'*+-.^_`|~9", True),
        ("", False),
        ("a b", False),
        ("a=b", False),
        ('a"', False),
        ("a,b", False),
        ("a;b", False),
        ("a/b", False),
        ("é", False),
        ("a\n", False),
        ("a\x00", False),
        ("(a)", False),
        ("a:b", False),
    ],
)
def test_token_table(value: str, expected: bool) -> None:
    """RFC 9110 §5.6.2: tchar only, at least one."""
    assert is_token(value) is expected


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("", '""'),
        ("api", '"api"'),
        ('say "hi"', r'"say \"hi\""'),
        ("back\\slash", r'"back\\slash"'),
        ("tab\there", '"tab\there"'),
        ("caf\xe9", '"caf\xe9"'),  # obs-text is carried as is
    ],
)
def test_quote_table(text: str, quoted: str) -> None:
    """Only DQUOTE and backslash are escaped; unquote is the reverse."""
    assert quote(text) == quoted
    assert unquote(quoted) == text


@pytest.mark.parametrize(
    "value",
    [
        "",
        "abc",
        '"abc',
        'abc"',
        '"a"b"',
        '"trailing\\"',
        '"bare " quote"',
        '"new\nline"',
        '"nul\x00"',
        "'single'",
        '"\u0100"',
    ],
)
def test_unquote_refuses_anything_but_one_quoted_string(value: str) -> None:
    """Unterminated, inner DQUOTE, trailing backslash, control characters, wide characters: ValueError."""
    with pytest.raises(ValueError, match="quoted-string"):
        unquote(value)


@pytest.mark.parametrize("char", NOT_QUOTABLE)
def test_quote_refuses_what_no_quoted_string_can_carry(char: str) -> None:
    """CR, LF, NUL and other controls, DEL, characters past U+00FF: never written into a header."""
    with pytest.raises(ValueError):
        quote("a" + char + "b")


@given(quotable_text)
def test_quote_round_trip(text: str) -> None:
    """unquote(quote(x)) == x, and quote always produces an RFC 9110 quoted-string."""
    quoted = quote(text)
    assert re.fullmatch(QUOTED_STRING, quoted)
    assert unquote(quoted) == text


@given(quoted_strings)
def test_unquote_round_trip(quoted: str) -> None:
    """Any quoted-string unquotes, and quoting the text again carries the same text (minimal escapes)."""
    text = unquote(quoted)
    assert unquote(quote(text)) == text
    assert len(quote(text)) <= len(quoted)


@given(st.text())
def test_unquote_accepts_exactly_the_grammar(value: str) -> None:
    """Any string: unquote answers only for a full quoted-string match, ValueError otherwise."""
    matched = re.fullmatch(QUOTED_STRING, value) is not None
    try:
        unquote(value)
    except ValueError:
        assert not matched
    else:
        assert matched


@given(quoted_strings)
def test_quoted_content_captures_the_inside(quoted: str) -> None:
    """QUOTED_CONTENT's group is the escaped inside; unescape of it equals unquote."""
    match = re.fullmatch(QUOTED_CONTENT, quoted)
    assert match is not None
    assert unescape(match.group(1)) == unquote(quoted)


@given(tokens)
def test_generated_tokens_are_tokens(token: str) -> None:
    """Any run of tchar is a token, and the fragment matches it whole."""
    assert is_token(token)
    assert re.fullmatch(TOKEN, token)


@given(st.text(min_size=1))
def test_a_token_has_no_character_outside_tchar(value: str) -> None:
    """is_token holds exactly when every character is a tchar."""
    assert is_token(value) == all(c in TCHARS for c in value)


@given(quotable_text, st.lists(st.tuples(tokens, quotable_text), max_size=3))
def test_challenge_params_round_trip_through_the_grammar(realm: str, extra: list[tuple[str, str]]) -> None:
    """Challenge.to_header quotes with the grammar and parse_challenges reads it back, escapes and all."""
    names = {name.lower() for name, _ in extra}
    if len(names) < len(extra) or names & {"realm", "error", "error_description", "scope"}:
        return
    challenge = Challenge(realm=realm, extra=tuple(extra))
    assert parse_challenges(challenge.to_header()) == [challenge]


@given(tokens, quotable_text)
def test_cache_control_keeps_quoted_arguments(name: str, argument: str) -> None:
    """An unknown directive with a quoted argument survives a Cache-Control round trip verbatim."""
    if name.lower() in {"max-age", "s-maxage", "no-store", "no-cache", "private", "public"}:
        return
    directive = f"{name}={quote(argument)}"
    parsed = CacheControl.from_header(directive)
    assert parsed.other == (directive.strip(),)
    assert CacheControl.from_header(parsed.to_header()) == parsed


def test_one_definition() -> None:
    """challenge.py and cachecontrol.py hold no tchar set of their own: they import the grammar."""
    from pathlib import Path

    package = Path(_abnf.__file__).parent
    tchar_class = "!#$%&'*+\\-.^_`|~0-9A-Za-z"
    for module in ("challenge.py", "cachecontrol.py"):
        assert tchar_class not in (package / module).read_text(), module
