"""Attacker-controlled text made safe for a log line.

No I/O. Paths, issuers, audiences, ``kid`` values and anything else that came
from a request or a token may carry CR, LF, ESC or other control characters
that forge log lines or drive a terminal, and may be arbitrarily long. Every
log call that names such a value passes it through :func:`loggable` first.
Raw tokens and secrets never reach a log line at all, escaped or not.
"""

from __future__ import annotations

__all__ = ["DEFAULT_LOG_TEXT_LIMIT", "loggable", "public_url"]

#: Characters of attacker-chosen text kept in one log field; enough to tell
#: two issuers or paths apart, small enough that a flood cannot fill a disk.
DEFAULT_LOG_TEXT_LIMIT = 120


def loggable(value: object, limit: int = DEFAULT_LOG_TEXT_LIMIT) -> str:
    """Return ``value`` as printable ASCII, escaped and cut to ``limit`` characters.

    Non-strings are shown with ``repr``-like escaping of their ``str()``. Control
    characters, non-ASCII and backslashes are written as Python escapes
    (``\\r``, ``\\x1b``, ``\\u2028``), so one log record stays one line and a
    terminal shows it verbatim. Text longer than ``limit`` ends in ``...(+N)``
    naming how many characters were dropped.
    """
    text = value if isinstance(value, str) else str(value)
    cut = len(text) - limit
    if cut > 0:
        text = text[:limit]
    if not (text.isascii() and text.isprintable()) or "\\" in text:
        text = "".join(_escape_char(c) for c in text)
    return f"{text}...(+{cut})" if cut > 0 else text


def _escape_char(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if char.isascii() and char.isprintable():
        return char
    return char.encode("unicode_escape").decode("ascii")


def public_url(url: str) -> str:
    """``url`` without its query and without any ``user:password@``, as logs and telemetry show it.

    A configured endpoint URL may carry credentials in its authority or
    secrets in its query (some token services take them there); neither may
    reach a log record, a metric label or an error message.
    """
    url = url.split("?", 1)[0]
    scheme, separator, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if separator and "@" in authority:
        url = f"{scheme}://{authority.rsplit('@', 1)[1]}{slash}{path}"
    return url
