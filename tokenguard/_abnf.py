"""The RFC 9110 field-value grammar, defined once: ``token``, ``quoted-string``, ``OWS``.

No I/O, no framework imports, no clock reads.

Rule: every header this package writes or reads with these productions
(``WWW-Authenticate`` challenges, ``Cache-Control`` directives, the scheme of
``Authorization``) takes them from here, so there is one definition to get
right. From RFC 9110 §5.6:

    token          = 1*tchar
    tchar          = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "."
                   / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
    quoted-string  = DQUOTE *( qdtext / quoted-pair ) DQUOTE
    qdtext         = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
    quoted-pair    = "\\" ( HTAB / SP / VCHAR / obs-text )
    obs-text       = %x80-FF
    OWS            = *( SP / HTAB )

As in h11's ``_abnf.py``, each production is a regex *source* fragment, so a
module can compose its own patterns from them (an auth-param, a directive);
the compiled forms and the small functions below cover the common checks.
"""

from __future__ import annotations

import re

__all__ = [
    "OWS",
    "QUOTABLE_CHAR",
    "QUOTED_CONTENT",
    "QUOTED_STRING",
    "TCHAR",
    "TOKEN",
    "TOKEN_RE",
    "is_token",
    "quote",
    "unescape",
    "unquote",
]

# RFC 9110 §5.6.2
TCHAR = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
TOKEN = TCHAR + "+"
# RFC 9110 §5.6.3
OWS = r"[ \t]*"
# RFC 9110 §5.6.4
_QDTEXT = r"[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]"
#: A character a quoted-string can carry, escaped or not (HTAB / SP / VCHAR / obs-text).
QUOTABLE_CHAR = r"[\t\x20-\x7e\x80-\xff]"
_QUOTED_PAIR = r"\\" + QUOTABLE_CHAR
QUOTED_STRING = rf'"(?:{_QDTEXT}|{_QUOTED_PAIR})*"'
#: A quoted-string whose inside (still escaped) is the one capturing group.
QUOTED_CONTENT = rf'"((?:{_QDTEXT}|{_QUOTED_PAIR})*)"'

TOKEN_RE = re.compile(TOKEN)
_QUOTED_STRING_RE = re.compile(QUOTED_STRING)
_QUOTABLE_RE = re.compile(QUOTABLE_CHAR + "*")
_NEEDS_ESCAPE = re.compile(r'(["\\])')
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)


def is_token(value: str) -> bool:
    """Whether ``value`` is an RFC 9110 ``token`` (an auth-scheme, a parameter or directive name)."""
    return TOKEN_RE.fullmatch(value) is not None


def quote(value: str) -> str:
    """``value`` as a quoted-string: in double quotes, with ``"`` and ``\\`` escaped.

    This is the reverse of :func:`unquote`. Only the two characters that must
    be escaped are (RFC 9110 §5.6.4: a sender SHOULD NOT generate a
    quoted-pair where a qdtext would do).

    Raises:
        ValueError: ``value`` holds a character no quoted-string can carry
            (a control character other than HTAB, DEL, or beyond U+00FF);
            callers that render untrusted text replace those first.
    """
    if not _QUOTABLE_RE.fullmatch(value):
        raise ValueError("a quoted-string cannot carry control characters or characters beyond U+00FF")
    return '"' + _NEEDS_ESCAPE.sub(r"\\\1", value) + '"'


def unescape(content: str) -> str:
    """Undo quoted-pairs in the inside of a quoted-string (as captured by :data:`QUOTED_CONTENT`)."""
    return _QUOTED_PAIR_RE.sub(r"\1", content) if "\\" in content else content


def unquote(value: str) -> str:
    """The text a quoted-string carries; the reverse of :func:`quote`.

    Raises:
        ValueError: ``value`` is not exactly one RFC 9110 quoted-string.
    """
    if not _QUOTED_STRING_RE.fullmatch(value):
        raise ValueError("not an RFC 9110 quoted-string")
    return unescape(value[1:-1])
