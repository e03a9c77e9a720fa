"""Attacker-chosen text is escaped and cut before it reaches a log line."""

from hypothesis import given
from hypothesis import strategies as st

from tokenguard._logtext import loggable, public_url


def test_control_characters_are_escaped() -> None:
    assert loggable("a\r\nb\x1b[2Jc\u2028d") == "a\\r\\nb\\x1b[2Jc\\u2028d"


def test_backslash_is_escaped_so_escapes_cannot_be_forged() -> None:
    assert loggable("x\\ny") == "x\\\\ny"


def test_long_text_is_cut_and_says_how_much() -> None:
    assert loggable("x" * 200, limit=10) == "x" * 10 + "...(+190)"


def test_plain_text_is_unchanged() -> None:
    assert loggable("https://idp.example.com/") == "https://idp.example.com/"


@given(st.text(max_size=300))
def test_output_is_one_printable_ascii_line(text: str) -> None:
    out = loggable(text, limit=50)
    assert out.isascii() and out.isprintable()
    assert len(out) <= 50 * 10 + 20


def test_public_url_drops_credentials_and_query() -> None:
    assert public_url("https://svc:s3cret@idp.example/token?key=s3cret") == "https://idp.example/token"
    assert public_url("https://idp.example/a@b") == "https://idp.example/a@b"  # an @ in the path is not userinfo


@given(st.text(alphabet="abc:@/?=", max_size=40))
def test_public_url_never_keeps_userinfo_or_query(tail: str) -> None:
    out = public_url("https://user:pw@host/" + tail)
    assert "?" not in out and "user:pw" not in out
