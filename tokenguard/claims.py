"""``TokenClaims``: the immutable, normalised view of a verified token.

No I/O, no framework imports, no clock reads.

JWT access tokens (RFC 9068) and introspection answers (RFC 7662 §2.2) carry
the same facts in slightly different shapes; both are normalised here so that
routes see one type whatever the token was.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from sys import intern
from typing import Any, Literal

from ._memo import CLAIM_SHAPES_LIMIT, SINGLE_AUDIENCES_LIMIT, remember
from .errors import InvalidToken
from .scopes import _PARSED as _PARSED_SCOPES
from .scopes import DEFAULT_SCOPE_CLAIMS, scopes_from_claims

__all__ = ["TokenClaims", "TokenType", "check_not_sender_constrained", "numeric_date"]

TokenType = Literal["jwt", "opaque", "custom"]


def numeric_date(value: object) -> float | None:
    """Return a JWT NumericDate (RFC 7519 §2) as a number, or ``None`` if it is not one.

    Booleans are refused although Python treats them as integers, and so are
    NaN and infinities: ``exp: true`` or ``exp: 1e999`` must never pass a
    time check. So are integers beyond ±2**53, which no float holds exactly
    (``exp`` with 400 digits would otherwise overflow a float conversion).
    Integers are returned as they are: the token's dict already holds them,
    so a cached token carries no extra float objects.
    """
    kind = type(value)
    if kind is int:
        if -_MAX_EXACT_INT <= value <= _MAX_EXACT_INT:  # type: ignore[operator]  # narrowed by the type check
            return value  # type: ignore[return-value]  # an int is a valid float here (PEP 484)
        return None
    if kind is not float:
        return None  # bool, str, None, containers, and int/float subclasses
    number: float = value  # type: ignore[assignment]  # narrowed by the type check
    if not math.isfinite(number):
        return None
    return number


_MAX_EXACT_INT = 2**53


#: Claims whose values repeat across the tokens of one issuer: interned, so the
#: cache holds one copy of each, not one per token.
_REPEATED_VALUES = ("iss", "aud", "azp", "client_id", "scope", "acr", "typ", "token_type", "tid", "idp")
#: Claims that are arrays of such strings (their members are interned in place).
_REPEATED_MEMBERS = frozenset(("aud", "amr", "scp", "roles", "groups"))
_MAX_INTERNED_VALUE = 256
_MAX_INTERNED_MEMBERS = 32


class _Shape:
    """The claim names of one kind of token, in order, with their positions.

    ``repeated`` lists the names among them whose values repeat from token to
    token (:data:`_REPEATED_VALUES`, :data:`_REPEATED_MEMBERS`), so that a new
    token visits only those.
    """

    __slots__ = ("index", "names", "repeated")

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.index = {name: position for position, name in enumerate(names)}
        self.repeated = tuple(name for name in names if name in _REPEATED_MEMBERS or name in _REPEATED_VALUES)


def _share_repeated_values(raw: dict[str, Any], names: tuple[str, ...]) -> None:
    # Replaces values, never adds keys: the dict keeps its order and shape.
    for name in names:
        value = raw[name]
        kind = type(value)
        if kind is str:
            if len(value) <= _MAX_INTERNED_VALUE:
                raw[name] = intern(value)
        elif kind is list and name in _REPEATED_MEMBERS and len(value) <= _MAX_INTERNED_MEMBERS:
            for position, member in enumerate(value):
                if type(member) is str and len(member) <= _MAX_INTERNED_VALUE:
                    value[position] = intern(member)


# Tokens of one issuer share their claim names: one _Shape each. Bounded, and
# only for ordinary sizes, so hostile claim sets cannot grow it.
_SHAPES: dict[tuple[str, ...], _Shape] = {}
_SHAPES_MAX = CLAIM_SHAPES_LIMIT
_SHAPE_MAX_NAMES = 64


def _shape_of(names: tuple[str, ...]) -> _Shape:
    shape = _SHAPES.get(names)
    if shape is None:
        shape = _Shape(names)
        if len(names) <= _SHAPE_MAX_NAMES:
            remember(_SHAPES, names, shape, _SHAPES_MAX)
    return shape


# One tuple per audience string, shared by every token naming it (most name one).
_SINGLE_AUDIENCES: dict[str, tuple[str]] = {}


def _audience(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        single = _SINGLE_AUDIENCES.get(value)
        if single is None:
            single = (value,)
            if len(value) <= 256:
                remember(_SINGLE_AUDIENCES, value, single, SINGLE_AUDIENCES_LIMIT)
        return single
    if isinstance(value, list | tuple):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


class TokenClaims(Mapping[str, Any]):
    """The claims of a verified token, normalised and read-only.

    Indexing gives any raw claim (``claims["email"]``); the properties give the
    normalised ones. Instances are immutable and safe to share between requests.

    Attributes:
        subject: ``sub``; ``None`` when absent (e.g. some client-credentials tokens).
        issuer: ``iss``.
        audience: ``aud`` as a tuple, whether it came as a string or an array.
        scopes: the granted scopes, from ``scope``/``scp`` or the configured claims.
        client_id: ``client_id``, else ``azp`` (OIDC), else ``cid`` (Okta).
        expires_at / issued_at / not_before: aware UTC datetimes, or ``None``.
        token_type: ``"jwt"`` (verified locally), ``"opaque"`` (introspected)
            or ``"custom"`` (a user-supplied verifier).
    """

    __slots__ = (
        "_shape",
        "_values",
        "exp",
        "iat",
        "issuer",
        "nbf",
        "scopes",
        "subject",
        "token_type",
    )

    _shape: _Shape
    _values: tuple[Any, ...]
    subject: str | None
    issuer: str | None
    scopes: frozenset[str]
    exp: float | None
    nbf: float | None
    iat: float | None
    token_type: TokenType

    def __init__(
        self,
        claims: Mapping[str, Any],
        *,
        token_type: TokenType,
        scope_claims: Sequence[str] = DEFAULT_SCOPE_CLAIMS,
    ) -> None:
        raw = dict(claims)
        _populate(
            self,
            raw,
            token_type,
            scope_claims,
            numeric_date(raw.get("exp")),
            numeric_date(raw.get("nbf")),
            numeric_date(raw.get("iat")),
        )

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("TokenClaims is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("TokenClaims is immutable")

    def __getitem__(self, key: str) -> Any:
        return self._values[self._shape.index[key]]

    def get(self, key: str, default: Any = None) -> Any:
        """The raw claim ``key``, or ``default``."""
        position = self._shape.index.get(key)
        return default if position is None else self._values[position]

    def __contains__(self, key: object) -> bool:
        return key in self._shape.index

    def __iter__(self) -> Iterator[str]:
        return iter(self._shape.names)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TokenClaims):
            return NotImplemented
        return self.token_type == other.token_type and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # claims hold lists; not hashable

    def __repr__(self) -> str:
        # Claims may be personal data; the repr names only what identifies the token.
        return (
            f"TokenClaims(token_type={self.token_type!r}, issuer={self.issuer!r}, "
            f"subject={self.subject!r}, scopes={sorted(self.scopes)!r})"
        )

    @property
    def audience(self) -> tuple[str, ...]:
        """``aud`` as a tuple, whether it came as a string or an array (non-strings skipped)."""
        # Read from the claims when asked, not stored: most requests never
        # ask, and a new token then builds nothing for it.
        return _audience(self.get("aud"))

    @property
    def client_id(self) -> str | None:
        """``client_id``, else ``azp`` (OIDC), else ``cid`` (Okta); ``None`` when none is a string."""
        index = self._shape.index
        for name in ("client_id", "azp", "cid"):
            position = index.get(name)
            if position is not None:
                # The first present one decides, as dict.get() chains did.
                value = self._values[position]
                return value if type(value) is str else None
        return None

    @property
    def expires_at(self) -> datetime | None:
        """``exp`` as an aware UTC datetime (clamped to the years 1–9999)."""
        return _datetime(self.exp)

    @property
    def issued_at(self) -> datetime | None:
        """``iat`` as an aware UTC datetime (clamped to the years 1–9999)."""
        return _datetime(self.iat)

    @property
    def not_before(self) -> datetime | None:
        """``nbf`` as an aware UTC datetime (clamped to the years 1–9999)."""
        return _datetime(self.nbf)

    def has_scopes(self, *scopes: str) -> bool:
        """Whether every one of ``scopes`` was granted."""
        return self.scopes.issuperset(scopes)

    @property
    def bound_key_thumbprint(self) -> str | None:
        """``cnf.jkt``: the RFC 7638 thumbprint of the DPoP key the token is bound to (RFC 9449 §6), if any."""
        cnf = self.get("cnf")
        jkt = cnf.get("jkt") if isinstance(cnf, Mapping) else None
        return jkt if isinstance(jkt, str) else None

    def to_dict(self) -> dict[str, Any]:
        """A shallow copy of the raw claims, e.g. to serialise."""
        return dict(zip(self._shape.names, self._values, strict=True))


# TokenClaims refuses attribute assignment; its constructor writes the slots
# through their member descriptors, about twice as fast as object.__setattr__.
_SLOT_SETTERS = {name: TokenClaims.__dict__[name].__set__ for name in TokenClaims.__slots__}
_set_shape = _SLOT_SETTERS["_shape"]
_set_values = _SLOT_SETTERS["_values"]
_set_subject = _SLOT_SETTERS["subject"]
_set_issuer = _SLOT_SETTERS["issuer"]
_set_scopes = _SLOT_SETTERS["scopes"]
_set_exp = _SLOT_SETTERS["exp"]
_set_nbf = _SLOT_SETTERS["nbf"]
_set_iat = _SLOT_SETTERS["iat"]
_set_token_type = _SLOT_SETTERS["token_type"]


def _populate(
    claims: TokenClaims,
    raw: dict[str, Any],
    token_type: TokenType,
    scope_claims: Sequence[str],
    exp: float | None,
    nbf: float | None,
    iat: float | None,
) -> None:
    # Names and values apart: the names (and their index) are shared by every
    # token of the same shape, so a cached token holds a tuple of values
    # instead of a whole dict (about 330 bytes less for 12 claims). The slots
    # are written through their descriptors (see _SLOT_SETTERS): this runs for
    # every new token. ``raw`` is a dict nobody else holds; its repeated
    # values are interned in place.
    names = tuple(raw)
    shape = _SHAPES.get(names) or _shape_of(names)
    if shape.repeated:
        _share_repeated_values(raw, shape.repeated)
    _set_shape(claims, shape)
    _set_values(claims, tuple(raw.values()))
    sub = raw.get("sub")
    _set_subject(claims, sub if type(sub) is str else None)
    iss = raw.get("iss")
    _set_issuer(claims, iss if type(iss) is str else None)
    # ``audience`` and ``client_id`` are read from the values when asked.
    # The common case without a call: scopes in ``scope`` alone, as a string
    # seen before (memoised by parse_scope).
    scopes = None
    if scope_claims == DEFAULT_SCOPE_CLAIMS and "scp" not in raw:
        scope = raw.get("scope")
        scopes = _PARSED_SCOPES.get(scope) if type(scope) is str else None
    _set_scopes(claims, scopes if scopes is not None else scopes_from_claims(raw, scope_claims))
    _set_exp(claims, exp)
    _set_nbf(claims, nbf)
    _set_iat(claims, iat)
    _set_token_type(claims, token_type)


def verified_jwt_claims(
    payload: dict[str, Any], scope_claims: Sequence[str], exp: float | None, nbf: float | None, iat: float | None
) -> TokenClaims:
    """The claims of a verified JWT, from its parsed payload (taken over, not copied)
    and the dates the claim checks already read from it."""
    claims: TokenClaims = object.__new__(TokenClaims)
    _populate(claims, payload, "jwt", scope_claims, exp, nbf, iat)
    return claims


def _datetime(timestamp: float | None) -> datetime | None:
    if timestamp is None:
        return None
    try:
        return datetime.fromtimestamp(timestamp, UTC)
    except (OverflowError, OSError, ValueError):
        # A signed token may say exp = year 30000; that is "never", not a crash.
        return (datetime.max if timestamp > 0 else datetime.min).replace(tzinfo=UTC)


#: ``cnf`` members that bind a token to a key the presenter must prove it
#: holds: a DPoP key thumbprint (RFC 9449 §6.1) or a client certificate
#: thumbprint (RFC 8705 §3.1).
SENDER_CONSTRAINT_MEMBERS = ("jkt", "x5t#S256")


def check_not_sender_constrained(cnf: object) -> None:
    """Refuse the ``cnf`` claim of a token presented as a plain Bearer token.

    A token bound to a key (``jkt``) or a certificate (``x5t#S256``) is
    useless without the proof; presented as Bearer it is most likely stolen
    (RFC 9449 §7.1, RFC 8705 §3). A ``cnf`` that is not a JSON object is
    malformed (RFC 7800 §3.1) and refused as well.

    Raises:
        InvalidToken: the token is sender-constrained, or ``cnf`` is malformed.
    """
    if not isinstance(cnf, Mapping):
        raise InvalidToken("malformed cnf claim")
    if any(member in cnf for member in SENDER_CONSTRAINT_MEMBERS):
        raise InvalidToken("sender-constrained token presented as a bearer token")
