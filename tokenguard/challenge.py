"""``WWW-Authenticate: Bearer`` challenges (RFC 6750 §3), built and parsed.

No I/O, no framework imports, no clock reads.

RFC 6750 restricts what may appear inside the challenge's parameters:

    error / error_description  = *( %x20-21 / %x23-5B / %x5D-7E )
    scope-token                = 1*( %x21 / %x23-5B / %x5D-7E )

so a description is never escaped: characters outside that set are replaced,
which also guarantees no header injection (CR/LF) and no quote breaking.
``realm`` and other auth-params are RFC 9110 quoted-strings and are escaped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ._abnf import OWS, QUOTABLE_CHAR, QUOTED_CONTENT, TOKEN, TOKEN_RE, is_token, quote, unescape

__all__ = ["Challenge", "parse_challenges", "sanitize_error_text"]

# RFC 6750 §3: error-description characters (printable ASCII minus '"' and '\').
_ERROR_TEXT = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")
_NOT_ERROR_TEXT = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")
# RFC 6750 §3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
# What a quoted-string can carry (RFC 9110 §5.6.4, in _abnf.py).
_QUOTABLE = re.compile(QUOTABLE_CHAR + "*")


def sanitize_error_text(text: str, fallback: str = "") -> str:
    """Return ``text`` reduced to the RFC 6750 ``error_description`` charset.

    Disallowed characters become ``?``; an empty result yields ``fallback``.
    """
    if _ERROR_TEXT.fullmatch(text):
        return text or fallback
    cleaned = _NOT_ERROR_TEXT.sub("?", text)
    return cleaned or fallback


def _quote(value: str) -> str:
    """Quote ``value`` as an RFC 9110 quoted-string; characters it cannot carry become ``?``."""
    if not _QUOTABLE.fullmatch(value):
        value = re.sub(r"[^\t\x20-\x7e]", "?", value)
    return quote(value)


@dataclass(frozen=True, slots=True)
class Challenge:
    """One ``Bearer`` challenge.

    Build it from a :class:`~tokenguard.TokenError` (``error.challenge(realm)``)
    and render it with :meth:`to_header`; :func:`parse_challenges` is the reverse.

    Args:
        scheme: the auth scheme, ``Bearer`` unless told otherwise.
        realm: the protection space; omitted from the header when ``None``.
        error: an RFC 6750 error code; ``None`` when the request carried no
            credentials (RFC 6750 §3.1).
        error_description: human-readable text, reduced to the RFC charset.
        scope: the scopes the resource needs (RFC 6750 §3, ``insufficient_scope``).
        extra: further auth-params, e.g. ``resource_metadata`` (RFC 9728 §5.1).
    """

    scheme: str = "Bearer"
    realm: str | None = None
    error: str | None = None
    error_description: str | None = None
    scope: tuple[str, ...] = ()
    extra: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        if not is_token(self.scheme):
            raise ValueError("scheme must be an RFC 9110 token")
        if self.error is not None and not _SCOPE_TOKEN.fullmatch(self.error):
            raise ValueError("error code must use the RFC 6750 charset")
        for token in self.scope:
            if not _SCOPE_TOKEN.fullmatch(token):
                raise ValueError("scope tokens must use the RFC 6750 scope-token charset")
        for name, _ in self.extra:
            if not is_token(name):
                raise ValueError("auth-param names must be RFC 9110 tokens")

    def to_header(self) -> str:
        """Render the challenge as a ``WWW-Authenticate`` field value.

        This is the reverse of :func:`parse_challenges`.
        """
        params: list[str] = []
        if self.realm is not None:
            params.append(f"realm={_quote(self.realm)}")
        if self.error is not None:
            params.append(f'error="{self.error}"')
        if self.error_description:
            text = sanitize_error_text(self.error_description)
            params.append(f'error_description="{text}"')
        if self.scope:
            params.append('scope="' + " ".join(self.scope) + '"')
        for name, value in self.extra:
            params.append(f"{name}={_quote(value)}")
        if not params:
            return self.scheme
        return self.scheme + " " + ", ".join(params)


# A tiny RFC 9110 §11.6.1 challenge parser, strict enough to check our own
# output and what other servers send; it is not used on the request path.
# auth-param = token BWS "=" BWS ( token / quoted-string )   (RFC 9110 §11.2)
_PARAM = re.compile(rf"{OWS}({TOKEN}){OWS}={OWS}(?:{QUOTED_CONTENT}|({TOKEN})){OWS}")


def parse_challenges(value: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value into :class:`Challenge` objects.

    The reverse of :meth:`Challenge.to_header`. Raises ``ValueError`` on any
    syntax it does not understand rather than guessing.
    """
    challenges: list[Challenge] = []
    pos = 0
    value = value.strip()
    while pos < len(value):
        scheme_match = TOKEN_RE.match(value, pos)
        if scheme_match is None:
            raise ValueError(f"expected an auth-scheme at offset {pos}")
        scheme = scheme_match.group(0)
        pos = scheme_match.end()
        params: dict[str, str] = {}
        extra: list[tuple[str, str]] = []
        while pos < len(value) and value[pos] == " ":
            pos += 1
        while pos < len(value):
            param = _PARAM.match(value, pos)
            if param is None:
                break
            name = param.group(1)
            raw = param.group(2)
            val = unescape(raw) if raw is not None else (param.group(3) or "")
            if name.lower() in params or any(n.lower() == name.lower() for n, _ in extra):
                raise ValueError(f"duplicate auth-param {name!r}")
            if name.lower() in {"realm", "error", "error_description", "scope"}:
                params[name.lower()] = val
            else:
                extra.append((name, val))
            pos = param.end()
            if pos < len(value) and value[pos] == ",":
                pos += 1
                continue
            break
        while pos < len(value) and value[pos] in ", ":
            pos += 1
        scope = tuple(params["scope"].split(" ")) if params.get("scope") else ()
        challenges.append(
            Challenge(
                scheme=scheme,
                realm=params.get("realm"),
                error=params.get("error"),
                error_description=params.get("error_description"),
                scope=scope,
                extra=tuple(extra),
            )
        )
    return challenges
