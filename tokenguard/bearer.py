"""Find the one Bearer token in a request (RFC 6750 §2).

No I/O, no framework imports, no clock reads: adapters pass the raw header
values, query values and form values they found, and get back the token or a
:class:`~tokenguard.TokenError`.

Rules, strictest reading of RFC 6750:

* ``credentials = "Bearer" 1*SP b64token`` (§2.1), scheme compared
  case-insensitively (RFC 9110 §11.1); anything else after the scheme is
  ``invalid_request``.
* An ``Authorization`` header with another scheme (``Basic …``) is not a
  Bearer credential: the request simply carries no token.
* Query (§2.3) and form-body (§2.2) tokens are off unless enabled; a token
  in a disabled place is ``invalid_request``, not silently ignored.
* More than one token (two headers, header plus query, two query values) is
  ``invalid_request`` (§3.1 "uses more than one method").
* The size limit is checked before any pattern is run on the value.
* The common form, exactly ``Bearer <b64token>`` with one space, is
  recognised by :func:`bearer_token_bytes` without a regular expression;
  anything else takes the full parse, so both give the same answer.
* Query and form parameter names are compared after percent-decoding
  (``access%5Ftoken`` is ``access_token``, RFC 3986 §2.1), by one function
  every adapter uses, so every adapter gives the same answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import unquote_to_bytes

from ._abnf import TOKEN_RE
from .errors import InvalidRequest, InvalidToken, MissingToken

__all__ = [
    "DEFAULT_MAX_TOKEN_BYTES",
    "bearer_token_bytes",
    "extract_token",
    "parameter_tokens",
    "parse_authorization",
    "query_may_hold_token",
]

#: Largest token accepted, checked before parsing. Precedents: nginx and
#: Node.js cap a whole header block at 8 KiB / 16 KiB, Tomcat at 8 KiB;
#: Microsoft.IdentityModel caps tokens at 250 KB. Real access tokens are well
#: under 4 KiB, so 8 KiB leaves room for large group claims while bounding work.
DEFAULT_MAX_TOKEN_BYTES = 8192

# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = r"[A-Za-z0-9\-._~+/]+=*"
# Scheme, at least one SP, one b64token; optional whitespace around the value
# is already stripped by HTTP parsers (RFC 9110 §5.5 OWS), we strip it too.
_BEARER_CREDENTIALS = re.compile(r"([Bb][Ee][Aa][Rr][Ee][Rr]) +(" + _B64TOKEN + r")")
_B64TOKEN_ONLY = re.compile(_B64TOKEN)
#: An auth-scheme is an RFC 9110 token (§11.1); one grammar for every header module.
_SCHEME = TOKEN_RE
# The b64token alphabet without "=" (RFC 6750 §2.1), for bytes.translate's delete argument.
_B64TOKEN_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/"


def parse_authorization(value: str, *, max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES) -> str | None:
    """Return the Bearer token in one ``Authorization`` value.

    Returns ``None`` when the header uses another scheme (the request carries
    no Bearer credentials). Raises :class:`InvalidRequest` when the value is a
    Bearer credential that is malformed or empty, and :class:`InvalidToken`
    when the token exceeds ``max_token_bytes``.
    """
    if len(value) > max_token_bytes + 64:
        # Bound the regex work; only now look at what the scheme is.
        head = value[:16].lstrip()
        if head[:6].lower() == "bearer" and head[6:7] in (" ", "\t"):
            raise InvalidToken("token exceeds the maximum size")
        if head[:6].lower() == "bearer":
            raise InvalidRequest("malformed Authorization header")
        return None
    stripped = value.strip(" \t")
    match = _BEARER_CREDENTIALS.fullmatch(stripped)
    if match is not None:
        token = match.group(2)
        if len(token) > max_token_bytes:
            raise InvalidToken("token exceeds the maximum size")
        return token
    if stripped[:6].lower() == "bearer":
        # Like Spring's resolver: anything that starts like Bearer and does
        # not parse is a malformed Bearer credential, not another scheme.
        if stripped[6:].strip(" \t") == "":
            raise InvalidRequest("empty bearer token")
        raise InvalidRequest("malformed Authorization header")
    scheme = stripped.split(" ", 1)[0]
    if not _SCHEME.fullmatch(scheme):
        raise InvalidRequest("malformed Authorization header")
    return None


def bearer_token_bytes(value: bytes, max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES) -> str | None:
    """The token of an ``Authorization`` value of the common form ``Bearer <b64token>``, else ``None``.

    Why: the adapters see this form on nearly every request, and an exact
    check (a prefix comparison and one ``bytes.translate`` deleting the
    b64token alphabet, both in C) costs a fraction of the regular expression
    over a ~1 KB value. ``None`` means "not this form": the caller then runs
    :func:`parse_authorization`, which gives the final answer (another
    scheme, extra spaces, a malformed or oversized token). Whenever this
    returns a token, :func:`parse_authorization` returns the same one.

    Args:
        value: the raw header value (ASGI bytes, or a WSGI value encoded as latin-1).
        max_token_bytes: longer tokens are left to :func:`parse_authorization`, which refuses them.

    Returns:
        The token, or ``None`` when the full parse must decide.
    """
    if value[:7].lower() != b"bearer ":
        return None
    token = value[7:]
    # RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
    # Deleting the alphabet from the token without its trailing "=" must
    # leave nothing, and at least one character must precede the "=".
    core = token.rstrip(b"=")
    if not core or len(token) > max_token_bytes or core.translate(None, _B64TOKEN_ALPHABET):
        return None
    return token.decode("ascii")


def query_may_hold_token(query: str | bytes) -> bool:
    """Whether :func:`parameter_tokens` could find an ``access_token`` in ``query``.

    ``False`` is certain (no ``access_token`` and no ``%`` that could spell
    it, RFC 3986 §2.1), so adapters skip the parse and the extraction rules
    for the query; ``True`` means "parse it".
    """
    if isinstance(query, str):
        return "access_token" in query or "%" in query
    return _PARAMETER in query or b"%" in query


_PARAMETER = b"access_token"


def parameter_tokens(encoded: str | bytes) -> list[str]:
    """Every ``access_token`` value in an ``application/x-www-form-urlencoded`` string.

    Used for the query string (RFC 6750 §2.3) and the form body (§2.2).
    Names are compared after percent-decoding, so ``access%5Ftoken`` counts:
    a check on the raw bytes would let a second token through beside the
    header one. A ``str`` is taken as the WSGI environ gives it (latin-1
    mapped bytes); values are decoded as UTF-8, with anything invalid
    replaced (and then refused as malformed by :func:`extract_token`).
    """
    raw = encoded.encode("latin-1", "replace") if isinstance(encoded, str) else encoded
    if _PARAMETER not in raw and b"%" not in raw:
        return []  # No spelling of the name is possible: skip the parse.
    found: list[str] = []
    for field in raw.split(b"&"):
        name, _, value = field.partition(b"=")
        # HTML form encoding: "+" is a space, then percent-decoding (as werkzeug and parse_qsl do).
        if unquote_to_bytes(name.replace(b"+", b" ")) == _PARAMETER:
            found.append(unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8", "replace"))
    return found


def _check_param_token(value: str, where: str, max_token_bytes: int) -> str:
    if len(value) > max_token_bytes:
        raise InvalidToken("token exceeds the maximum size")
    if value == "":
        raise InvalidRequest(f"empty access_token {where} parameter")
    if not _B64TOKEN_ONLY.fullmatch(value):
        raise InvalidRequest(f"malformed access_token {where} parameter")
    return value


def extract_token(
    authorization: Sequence[str] = (),
    query_tokens: Sequence[str] = (),
    form_tokens: Sequence[str] = (),
    *,
    allow_query: bool = False,
    allow_form: bool = False,
    max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
) -> str:
    """Return the single Bearer token a request carries.

    Args:
        authorization: every ``Authorization`` header value, in order.
        query_tokens: every ``access_token`` query parameter value.
        form_tokens: every ``access_token`` form-body value; adapters pass it
            only for RFC 6750 §2.2 requests (urlencoded body, not GET).
        allow_query: accept the query parameter. Tokens in URLs end up in
            access logs, browser history and Referer headers (RFC 6750 §5.3);
            enable only for clients that cannot send headers.
        allow_form: accept the form-body parameter.
        max_token_bytes: tokens longer than this are refused before parsing.

    Raises:
        MissingToken: no Bearer credentials at all; answer 401 without an error code.
        InvalidRequest: malformed, empty, duplicated, or in a disallowed place.
        InvalidToken: larger than ``max_token_bytes``.
    """
    if len(authorization) > 1:
        raise InvalidRequest("more than one Authorization header")
    found: list[str] = []
    if authorization:
        token = parse_authorization(authorization[0], max_token_bytes=max_token_bytes)
        if token is not None:
            found.append(token)
    if query_tokens:
        if not allow_query:
            raise InvalidRequest("access tokens are not accepted in the query string")
        found.extend(_check_param_token(v, "query", max_token_bytes) for v in query_tokens)
    if form_tokens:
        if not allow_form:
            raise InvalidRequest("access tokens are not accepted in the request body")
        found.extend(_check_param_token(v, "form", max_token_bytes) for v in form_tokens)
    if not found:
        raise MissingToken()
    if len(found) > 1:
        raise InvalidRequest("more than one access token in the request")
    return found[0]
