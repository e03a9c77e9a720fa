"""Local verification of JWS-compact access tokens.

No I/O, no framework imports, no clock reads: the caller passes the key set
and ``now``. Getting keys (discovery, JWKS, rotation) is ``sources.py``'s job.

Order of checks, cheapest first, so a rejected token costs little:

1. structure: exactly three base64url segments, canonical encoding, size
   already bounded by the caller;
2. header: a JSON object with no duplicate members, ``alg`` in the issuer's
   allow-list (``none`` never is), no ``crit`` (we implement no extension, so
   RFC 7515 §4.1.11 obliges us to refuse), no ``b64``/``zip``; ``jku``,
   ``x5u``, ``x5c`` and ``jwk`` are ignored, never fetched or trusted;
3. ``typ``: a JWT typed as another kind (``dpop+jwt``, ``logout+jwt``, any
   ``*+jwt`` but ``at+jwt``, ``JWE``) is never an access token (RFC 8725
   §2.8, §3.11), or only the configured types pass;
4. claims: ``iss`` exact, ``aud`` any-of exact, ``exp``/``nbf``/``iat`` with
   leeway, required claims;
5. signature, with keys chosen by ``kid`` and bound to ``alg`` by type.

Header and payload JSON is strict: UTF-8 only, no duplicate members, no
``NaN``, and no string holding a lone surrogate (``"\\ud800"``), which is not
Unicode text (RFC 7493 §2.1) and which other parsers replace or refuse.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from math import inf
from types import MappingProxyType
from typing import Any

from . import diagnostics
from ._memo import JOSE_HEADERS_LIMIT, remember
from .claims import _MAX_EXACT_INT, TokenClaims, numeric_date, verified_jwt_claims
from .errors import ConfigurationError, InvalidToken
from .keys import ASYMMETRIC_ALGORITHMS, SUPPORTED_ALGORITHMS, KeySet
from .scopes import DEFAULT_SCOPE_CLAIMS

__all__ = [
    "DEFAULT_LEEWAY",
    "JWTPolicy",
    "has_lone_surrogate",
    "names_other_kind",
    "UnverifiedJWS",
    "parse_jws",
    "peek_issuer",
    "verify_compact",
    "verify_jws",
]

#: Clock skew tolerated on ``exp``, ``nbf`` and ``iat``, in seconds.
#: Precedents: Spring Security and Envoy 60 s, oauth4webapi 30 s, Auth0's
#: Node middleware 5 s, panva/jose 0 s, Microsoft.IdentityModel 300 s.
DEFAULT_LEEWAY = 60.0

_B64_TAIL_OK = {
    # For a segment of length 4k+2 / 4k+3 the last character carries spare
    # bits that must be zero in a canonical encoding (RFC 4648 §3.5).
    2: frozenset("AQgw"),
    3: frozenset("AEIMQUYcgkosw048"),
}
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_PADDING = ("", "", "==", "=")


try:
    # Optional (the "speedups" extra): SIMD base64, a fifth of binascii's time
    # on a 600-character segment. The alphabet, padding and canonical-tail
    # rules below are enforced the same way whichever decoder runs.
    from pybase64 import b64decode as _simd_b64decode
except ImportError:  # pragma: no cover - depends on the installation
    _FAST_DECODE: Callable[[str, bytes, bool], bytes] | None = None
else:
    _FAST_DECODE = _simd_b64decode


def _b64decode(segment: str) -> bytes:
    # The alphabet is enforced here: the caller refused "+", "/" and "=" (in
    # standard base64, not in base64url), and both decoders refuse every
    # other character outside the alphabet (strict mode / validate=True),
    # whitespace and non-ASCII included.
    rest = len(segment) % 4
    if rest == 1:
        raise InvalidToken("malformed token")
    if rest and segment[-1] not in _B64_TAIL_OK[rest]:
        # Two encodings of the same bytes must not both verify.
        raise InvalidToken("malformed token")
    try:
        if _FAST_DECODE is not None:
            # Positional (altchars, validate=True): keyword arguments and a
            # partial() cost as much as the decode of a 600-character segment.
            return _FAST_DECODE(segment + _PADDING[rest], b"-_", True)
        return binascii.a2b_base64((segment + _PADDING[rest]).encode("ascii").translate(_TO_STANDARD), strict_mode=True)
    except (binascii.Error, ValueError):  # UnicodeEncodeError is a ValueError
        raise InvalidToken("malformed token") from None


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        # RFC 7515 §5.2 / RFC 7519 §4: duplicate member names must be rejected
        # or resolved; two parsers resolving them differently is an attack.
        raise ValueError("duplicate member name")
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Built once: json.loads() with keyword arguments builds a decoder per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_members, parse_constant=_reject_constant)
# JSONDecoder.decode() minus its two Python frames and whitespace regexes: the
# C scanner on the text stripped of JSON whitespace (RFC 8259 §2), which must
# consume all of it. The top-level value must be an object, so no whitespace
# that matters can sit at either end.
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]  # CPython's, untyped
_JSON_WHITESPACE = " \t\n\r"


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        # Strict UTF-8 first: json.loads(bytes) would also accept UTF-16/32.
        text = raw.decode("utf-8").strip(_JSON_WHITESPACE)
        value, end = _SCAN(text, 0)
    except (UnicodeDecodeError, ValueError, RecursionError, StopIteration):
        raise InvalidToken(f"malformed token {what}") from None
    if end != len(text) or not isinstance(value, dict):
        raise InvalidToken(f"malformed token {what}")
    # Only a \u escape can make a surrogate (the UTF-8 decode refused raw ones):
    # the walk runs for the rare texts that hold one.
    if "\\u" in text and has_lone_surrogate(value):
        raise InvalidToken(f"malformed token {what}")
    return value


def has_lone_surrogate(value: object) -> bool:
    """Whether a parsed JSON value holds a string with an unpaired surrogate (RFC 7493 §2.1)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class UnverifiedJWS:
    """A structurally valid JWS whose signature has not been checked yet.

    Nothing in it may be trusted except for routing (which issuer's keys to
    try); :func:`verify_jws` turns it into :class:`TokenClaims`. Read-only by
    convention: a plain slotted class, as one is built per new token and a
    frozen dataclass costs three times as much to build. ``encoded_header`` is
    the header segment as sent, which identifies the header exactly (verifiers
    remember the outcome of checking it).
    """

    __slots__ = ("encoded_header", "header", "payload", "signature", "signing_input")

    def __init__(
        self,
        header: Mapping[str, Any],
        payload: Mapping[str, Any],
        signing_input: bytes,
        signature: bytes,
        encoded_header: str = "",
    ) -> None:
        self.header = header
        self.payload = payload
        self.signing_input = signing_input
        self.signature = signature
        self.encoded_header = encoded_header

    def __repr__(self) -> str:
        return f"UnverifiedJWS(header={dict(self.header)!r})"


def looks_like_jws(token: str) -> bool:
    """Whether ``token`` has the JWS compact shape (three base64url segments)."""
    return token.count(".") == 2 and token[0] == "e"


# Headers repeat across an issuer's tokens (same alg, kid, typ): keep the last
# few parsed ones. Keyed by the exact encoded bytes, so a hit is the same parse.
_HEADER_MEMO: dict[str, Mapping[str, Any]] = {}
_HEADER_MEMO_SIZE = JOSE_HEADERS_LIMIT


def _header(header_b64: str) -> Mapping[str, Any]:
    header = _HEADER_MEMO.get(header_b64)
    if header is None:
        header = MappingProxyType(_json_object(_b64decode(header_b64), "header"))
        if len(header_b64) <= 512:
            remember(_HEADER_MEMO, header_b64, header, _HEADER_MEMO_SIZE)
    return header


def _split(token: str) -> tuple[str, str, Mapping[str, Any], bytes, bytes]:
    # Three segments; the header is never empty, the payload may be (RFC 7515
    # §7.1; never in a JWT, whose payload must be a JSON object). Splitting and
    # three memchr scans replace a regular expression: a third of the cost.
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or "+" in token or "/" in token or "=" in token:
        raise InvalidToken("malformed token")
    header_b64, payload_b64, signature_b64 = parts
    header = _header(header_b64)
    payload = _b64decode(payload_b64) if payload_b64 else b""
    signature = _b64decode(signature_b64) if signature_b64 else b""
    return header_b64, payload_b64, header, payload, signature


def parse_jws(token: str) -> UnverifiedJWS:
    """Split and decode a JWS compact serialization without verifying it.

    Raises:
        InvalidToken: anything but three canonical base64url segments with JSON
            objects in the first two.
    """
    # _split() and the memoised header read, inlined: this runs for every new
    # token, and each Python call saved is ~2 % of its non-signature work.
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or "+" in token or "/" in token or "=" in token:
        raise InvalidToken("malformed token")
    header_b64, payload_b64, signature_b64 = parts
    header = _HEADER_MEMO.get(header_b64) or _header(header_b64)
    payload = _b64decode(payload_b64) if payload_b64 else b""
    signature = _b64decode(signature_b64) if signature_b64 else b""
    return UnverifiedJWS(
        header,
        _json_object(payload, "payload"),
        token[: len(header_b64) + len(payload_b64) + 1].encode("ascii"),
        signature,
        header_b64,
    )


def verify_compact(token: str, keys: KeySet, algorithms: frozenset[str]) -> bytes:
    """Verify a JWS compact serialization whose payload need not be JSON; return the payload.

    The same structure, header and signature checks as the JWT path, without
    claims: for signed documents other than access tokens, and for test vectors.

    Raises:
        InvalidToken: malformed, disallowed algorithm, unknown key or bad signature.
    """
    header_b64, payload_b64, header, payload, signature = _split(token)
    alg, kid = _check_protected_header(header, algorithms)
    jws = UnverifiedJWS(header, {}, f"{header_b64}.{payload_b64}".encode("ascii"), signature)
    check_signature(jws, keys, alg, kid)
    return payload


def peek_issuer(jws: UnverifiedJWS) -> str | None:
    """The unverified ``iss``, used only to pick which configured issuer to try."""
    iss = jws.payload.get("iss")
    return iss if isinstance(iss, str) else None


def _normalise_typ(value: str) -> str:
    # RFC 7515 §4.1.9: "application/" may be omitted; compare case-insensitively.
    value = value.lower()
    return value[12:] if value.startswith("application/") else value


@dataclass(frozen=True, slots=True)
class JWTPolicy:
    """What a token from one issuer must satisfy.

    Args:
        issuer: the exact ``iss`` value; no normalisation, no trailing-slash
            tolerance (RFC 9068 §4, OIDC Discovery §4.3).
        audiences: accepted ``aud`` values; a token passes when any of its
            audiences equals any of these exactly. ``None`` skips the check,
            which is only safe when the issuer mints tokens for this API alone.
        algorithms: the allow-list. Defaults to every asymmetric algorithm;
            a key is further restricted to the algorithms of its type.
        leeway: clock skew tolerated, in seconds (see :data:`DEFAULT_LEEWAY`).
            Larger values keep expired or revoked tokens alive for longer.
        require_exp: refuse tokens without ``exp`` (default on).
        required_claims: claims that must be present.
        token_types: accepted ``typ`` header values, compared without an
            ``application/`` prefix and case-insensitively; ``None`` among them
            accepts a token without ``typ``. E.g. ``("at+jwt",)`` for RFC 9068
            §2.1 access tokens only, which also refuses ID tokens, or
            ``("at+jwt", "jwt", None)``. Empty (the default): any ``typ`` but
            one naming another kind of JWT (:func:`names_other_kind`), and no
            ``typ`` at all (many providers send none, or ``JWT``).
        max_token_age: refuse tokens whose ``iat`` is older than this (seconds).
        scope_claims: claims read for scopes.
    """

    issuer: str
    audiences: tuple[str, ...] | None
    algorithms: frozenset[str] = ASYMMETRIC_ALGORITHMS
    leeway: float = DEFAULT_LEEWAY
    require_exp: bool = True
    required_claims: tuple[str, ...] = ()
    token_types: tuple[str | None, ...] = ()
    max_token_age: float | None = None
    scope_claims: tuple[str, ...] = DEFAULT_SCOPE_CLAIMS

    def __post_init__(self) -> None:
        if not self.issuer:
            raise ConfigurationError("issuer must be a non-empty string")
        if "none" in {a.lower() for a in self.algorithms}:
            raise ConfigurationError("algorithms: 'none' can never be allowed")
        unknown = set(self.algorithms) - SUPPORTED_ALGORITHMS
        if unknown:
            raise ConfigurationError(f"algorithms: unsupported {sorted(unknown)}")
        if not self.algorithms:
            raise ConfigurationError("algorithms is empty: allow at least one")
        if self.audiences is not None and not all(isinstance(a, str) and a for a in self.audiences):
            raise ConfigurationError("audience must be a non-empty string or a sequence of them")
        if isinstance(self.leeway, bool) or not isinstance(self.leeway, int | float) or not 0 <= self.leeway < inf:
            raise ConfigurationError(f"leeway must be a non-negative number of seconds, not {self.leeway!r}")
        age = self.max_token_age
        if age is not None and (isinstance(age, bool) or not isinstance(age, int | float) or not 0 < age < inf):
            raise ConfigurationError(f"max_token_age must be a positive number of seconds or None, not {age!r}")
        if isinstance(self.token_types, str) or not all(t is None or isinstance(t, str) for t in self.token_types):
            raise ConfigurationError("token_types must be a sequence of strings (or None for an absent typ)")
        normalised = tuple(None if t is None else _normalise_typ(t) for t in self.token_types)
        object.__setattr__(self, "token_types", normalised)

    @staticmethod
    def audiences_of(audience: str | Sequence[str] | None) -> tuple[str, ...] | None:
        """Normalise a user-supplied audience argument."""
        if audience is None:
            return None
        if isinstance(audience, str):
            return (audience,)
        return tuple(audience)


def _check_protected_header(header: Mapping[str, Any], algorithms: frozenset[str]) -> tuple[str, str | None]:
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        diagnostics.algorithm_not_allowed(algorithms, alg)
        raise InvalidToken("token algorithm not allowed")
    if "crit" in header:
        raise InvalidToken("unsupported critical header parameter")
    if "b64" in header or "zip" in header:
        raise InvalidToken("unsupported header parameter")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise InvalidToken("malformed key id")
    return alg, kid


#: ``typ`` values (normalised) of JOSE objects that are not access tokens,
#: beyond the ``*+jwt`` family: an encrypted token is never accepted as signed.
_OTHER_KINDS = frozenset({"jwe", "jose+json"})


def names_other_kind(typ: str) -> bool:
    """Whether a ``typ`` value names a kind of JWT other than an access token.

    RFC 8725 §3.11 asks each kind of JWT to carry its own ``typ``
    (``dpop+jwt`` RFC 9449, ``secevent+jwt`` RFC 8417, ``logout+jwt`` OIDC
    Back-Channel Logout...), so that one kind is never accepted as another
    (§2.8, substitution): every ``*+jwt`` but ``at+jwt`` (RFC 9068), and JWE.
    """
    value = _normalise_typ(typ)
    return value in _OTHER_KINDS or (value.endswith("+jwt") and value != "at+jwt")


def check_header(header: Mapping[str, Any], policy: JWTPolicy) -> tuple[str, str | None]:
    """Validate the protected header; return ``(alg, kid)``."""
    alg, kid = _check_protected_header(header, policy.algorithms)
    typ = header.get("typ")
    if typ is None:
        if policy.token_types and None not in policy.token_types:
            diagnostics.token_type_mismatch(policy.token_types, typ)
            raise InvalidToken("wrong token type")
    elif not isinstance(typ, str):
        raise InvalidToken("wrong token type")
    elif policy.token_types:
        if _normalise_typ(typ) not in policy.token_types:
            diagnostics.token_type_mismatch(policy.token_types, typ)
            raise InvalidToken("wrong token type")
    elif names_other_kind(typ):
        raise InvalidToken("wrong token type")
    return alg, kid


_ABSENT: Any = object()


#: ``exp``, ``nbf`` and ``iat`` as numbers, ``None`` for those absent.
Dates = tuple[float | None, float | None, float | None]


def _date(name: str, value: object) -> float:
    date = numeric_date(value)
    if date is None:
        raise InvalidToken(f"malformed {name} claim")
    return date


def check_claims(payload: Mapping[str, Any], policy: JWTPolicy, now: float) -> Dates:
    """Validate registered claims (RFC 7519 §4.1) against ``policy`` at ``now``.

    Returns ``exp``, ``nbf`` and ``iat`` as numbers (``None`` when absent).
    """
    if payload.get("iss") != policy.issuer:
        raise InvalidToken("wrong issuer")
    if policy.audiences is not None:
        aud = payload.get("aud")
        if isinstance(aud, str):
            ok = aud in policy.audiences
        elif isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
            ok = any(a in policy.audiences for a in aud)
        else:
            ok = False
        if not ok:
            diagnostics.audience_mismatch(policy.issuer, policy.audiences, aud)
            raise InvalidToken("wrong audience")
    leeway = policy.leeway
    # Dates are ints in practice: an int within ±2**53 is a valid NumericDate
    # as it is; anything else goes through numeric_date, which refuses what is
    # not a finite number.
    exp = payload.get("exp", _ABSENT)
    if exp is _ABSENT:
        if policy.require_exp:
            raise InvalidToken("token has no expiry")
        exp = None
    else:
        if type(exp) is not int or not -_MAX_EXACT_INT <= exp <= _MAX_EXACT_INT:
            exp = _date("exp", exp)
        if now >= exp + leeway:
            raise InvalidToken("token expired")
    nbf = payload.get("nbf", _ABSENT)
    if nbf is _ABSENT:
        nbf = None
    else:
        if type(nbf) is not int or not -_MAX_EXACT_INT <= nbf <= _MAX_EXACT_INT:
            nbf = _date("nbf", nbf)
        if now + leeway < nbf:
            raise InvalidToken("token not yet valid")
    iat = payload.get("iat", _ABSENT)
    if iat is _ABSENT:
        if policy.max_token_age is not None:
            raise InvalidToken("token has no iat claim")
        iat = None
    else:
        if type(iat) is not int or not -_MAX_EXACT_INT <= iat <= _MAX_EXACT_INT:
            iat = _date("iat", iat)
        if iat > now + leeway:
            raise InvalidToken("token issued in the future")
        if policy.max_token_age is not None and now - iat > policy.max_token_age + leeway:
            raise InvalidToken("token too old")
    sub = payload.get("sub")
    if sub is not None and type(sub) is not str:
        raise InvalidToken("malformed sub claim")
    for name in policy.required_claims:
        if name not in payload:
            raise InvalidToken(f"missing required claim {_claim_label(name)}")
    return exp, nbf, iat


def _claim_label(name: str) -> str:
    # Claim names come from configuration, but keep the description tidy anyway.
    return name if name.isascii() and name.isprintable() and len(name) <= 64 else "claim"


def check_signature(jws: UnverifiedJWS, keys: KeySet, alg: str, kid: str | None) -> str:
    """Verify the signature with the matching keys; return the key's thumbprint."""
    for key in keys.candidates(kid, alg):
        if key.verifiers[alg](jws.signing_input, jws.signature):
            return key.thumbprint
    if kid is not None and not keys.has_kid(kid):
        diagnostics.unknown_kid(kid, keys.by_kid, "the issuer's key set")
        raise InvalidToken("unknown signing key")
    raise InvalidToken("signature verification failed")


def verify_jws(
    jws: UnverifiedJWS,
    keys: KeySet,
    policy: JWTPolicy,
    now: float,
    *,
    checked: tuple[str, str | None] | None = None,
) -> tuple[TokenClaims, str]:
    """Verify ``jws`` completely; return its claims and the verifying key's thumbprint.

    ``checked`` is ``(alg, kid)`` when the caller already checked this header
    (verifiers remember that per encoded header, see :func:`check_header`).

    Raises:
        InvalidToken: any check failed; the description says which, briefly.
    """
    alg, kid = checked if checked is not None else check_header(jws.header, policy)
    payload = jws.payload
    exp, nbf, iat = check_claims(payload, policy, now)
    thumbprint = check_signature(jws, keys, alg, kid)
    # parse_jws made the payload dict for this token alone: it is taken over
    # (its repeated values get interned in place), not copied.
    owned = payload if type(payload) is dict else dict(payload)
    return verified_jwt_claims(owned, policy.scope_claims, exp, nbf, iat), thumbprint


def algorithms_of(algorithms: Iterable[str] | None) -> frozenset[str]:
    """Normalise a user-supplied allow-list (``None`` means every asymmetric one)."""
    return ASYMMETRIC_ALGORITHMS if algorithms is None else frozenset(algorithms)
