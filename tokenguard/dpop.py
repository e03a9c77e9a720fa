"""DPoP proofs (RFC 9449) checked at the resource server.

No I/O, no framework imports, no clock reads: the caller passes the proof, the
request's method and URI, the access token and ``now``. Replay (``jti``) and
server nonces are separate concepts (``replay.py``, ``nonce.py``); the request
entry (``request_auth.py``) ties them together.

Checks, in the order of RFC 9449 §4.3 (cheapest first):

1. one ``DPoP`` header (the caller counts them) holding one well-formed JWT;
2. ``typ`` is ``dpop+jwt``; ``alg`` asymmetric and in the allow-list; ``jwk``
   a public key (no private members), usable with ``alg``;
3. the signature verifies with that ``jwk``;
4. ``jti``, ``htm``, ``htu`` and ``iat`` present; ``htm`` equals the method;
   ``htu`` equals the request URI without query and fragment, both
   normalised per RFC 3986 §6.2.2-6.2.3;
5. ``iat`` within the window; ``ath`` equals the hash of the access token.

``jti`` uniqueness and ``nonce`` are checked by the caller with the proof's
:class:`DPoPProof` answer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from .challenge import Challenge
from .errors import ConfigurationError, InvalidRequest, TokenError
from .jwt import parse_jws
from .keys import ASYMMETRIC_ALGORITHMS, parse_jwk

if TYPE_CHECKING:
    from .nonce import DPoPNonces
    from .replay import ReplayStore

__all__ = [
    "DEFAULT_DPOP_ALGORITHMS",
    "DEFAULT_PROOF_MAX_AGE",
    "DPoPMode",
    "DPoPProof",
    "DPoPSettings",
    "InvalidDPoPProof",
    "UseDPoPNonce",
    "access_token_hash",
    "check_proof",
    "jwk_thumbprint",
    "normalize_htu",
]

#: ``disabled``: DPoP is not accepted; ``allowed``: Bearer and DPoP both;
#: ``required``: only DPoP-bound tokens with a proof.
DPoPMode = Literal["disabled", "allowed", "required"]
_MODES = ("disabled", "allowed", "required")

#: Asymmetric algorithms accepted for proofs. Precedents: Spring Security
#: accepts the RSA, PSS and ECDSA families; oidc-provider's default
#: ``dPoPSigningAlgValues`` is ES256, EdDSA, PS256 and RS256 among others.
DEFAULT_DPOP_ALGORITHMS: tuple[str, ...] = ("ES256", "ES384", "EdDSA", "PS256", "RS256")

#: How old a proof's ``iat`` may be, in seconds. RFC 9449 §11.1 leaves it to
#: the server ("a relatively brief period"); Spring Security uses 60 s,
#: oauth4webapi and oidc-provider 300 s (with nonces recommended for less).
DEFAULT_PROOF_MAX_AGE = 300.0
#: How far in the future ``iat`` may be (client clock ahead of ours).
DEFAULT_PROOF_LEEWAY = 5.0

#: Proofs larger than this are refused before parsing: a proof is a header
#: with one public key and a handful of claims (an RSA-4096 proof is ~1.5 KiB).
MAX_PROOF_BYTES = 8192
#: Longest ``jti`` kept in the replay store (RFC 9449 §4.2 suggests 96 bits of randomness).
MAX_JTI_LENGTH = 256

# Members that make a JWK private (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
# RFC 7638 §3.2: the required members of each key type, in lexicographic order.
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}
# RFC 9110 §9.1: method = token.
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class InvalidDPoPProof(TokenError):
    """401 ``invalid_dpop_proof`` (RFC 9449 §7.1): the DPoP proof is missing, malformed or wrong.

    Rendered on the ``DPoP`` challenge. The client should make a fresh proof.
    """

    status_code = 401
    error_code = "invalid_dpop_proof"
    generic_description = "invalid DPoP proof"
    auth_scheme = "DPoP"


class UseDPoPNonce(TokenError):
    """401 ``use_dpop_nonce`` (RFC 9449 §9): retry with the server nonce sent in ``DPoP-Nonce``.

    Args:
        nonce: the current server nonce, sent in the ``DPoP-Nonce`` header.
    """

    status_code = 401
    error_code = "use_dpop_nonce"
    generic_description = "a DPoP nonce is required"
    auth_scheme = "DPoP"

    def __init__(self, nonce: str, description: str = "") -> None:
        super().__init__(description or "resend the request with the nonce in DPoP-Nonce")
        self.nonce = nonce

    def headers(
        self,
        realm: str | None = None,
        *,
        include_description: bool = True,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> list[tuple[str, str]]:
        # RFC 9449 §8.1: the nonce travels in its own header next to the challenge.
        return [
            *super().headers(realm, include_description=include_description, extra=extra),
            ("DPoP-Nonce", self.nonce),
        ]


@dataclass(frozen=True, slots=True)
class DPoPSettings:
    """How a guard (or a route) treats DPoP.

    Args:
        mode: ``"disabled"``, ``"allowed"`` (default: Bearer and DPoP) or ``"required"``.
        algorithms: asymmetric ``alg`` values accepted on proofs; advertised as
            ``algs`` in the ``DPoP`` challenge and in the RFC 9728 metadata.
        max_age: seconds a proof stays acceptable after its ``iat``; also how
            long its ``jti`` is remembered.
        leeway: seconds ``iat`` may lie in the future.
        nonces: a :class:`~tokenguard.nonce.DPoPNonces` to demand server
            nonces (RFC 9449 §8-9); ``None`` for none.
        replay: where seen ``jti`` values live; an in-process
            :class:`~tokenguard.replay.MemoryReplayStore` by default. With
            several workers use :class:`~tokenguard.replay.RedisReplayStore`,
            or a proof replayed to another worker is accepted there.

    Raises:
        ConfigurationError: unknown mode, a symmetric or unknown algorithm,
            a bare string for ``algorithms``, or a non-positive ``max_age``.
    """

    mode: DPoPMode = "allowed"
    algorithms: tuple[str, ...] = DEFAULT_DPOP_ALGORITHMS
    max_age: float = DEFAULT_PROOF_MAX_AGE
    leeway: float = DEFAULT_PROOF_LEEWAY
    nonces: DPoPNonces | None = None
    replay: ReplayStore | None = field(default=None)

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ConfigurationError(f"mode must be one of {', '.join(_MODES)}; got {self.mode!r}")
        if isinstance(self.algorithms, str):
            raise ConfigurationError('algorithms must be a sequence of names, e.g. ("ES256",), not a string')
        algorithms = tuple(self.algorithms)
        if not algorithms:
            raise ConfigurationError("algorithms must name at least one algorithm")
        bad = [a for a in algorithms if a not in ASYMMETRIC_ALGORITHMS]
        if bad:
            raise ConfigurationError(f"algorithms must be asymmetric JWS algorithms; not {bad}")
        object.__setattr__(self, "algorithms", algorithms)
        for name in ("max_age", "leeway"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigurationError(f"{name} must be a finite number of seconds, not {value!r}")
        if not self.max_age > 0:
            raise ConfigurationError("max_age must be positive")
        if not self.leeway >= 0:
            raise ConfigurationError("leeway must not be negative")
        if self.replay is None:
            from .replay import MemoryReplayStore

            object.__setattr__(self, "replay", MemoryReplayStore())

    @property
    def enabled(self) -> bool:
        """Whether DPoP proofs are accepted at all."""
        return self.mode != "disabled"

    def challenge(
        self,
        realm: str | None,
        error: TokenError | None,
        include_description: bool,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> Challenge:
        """The ``DPoP`` challenge (RFC 9449 §7.1) with ``algs``, carrying ``error`` if given.

        ``extra`` auth-params (``resource_metadata``) follow the error's own
        (``acr_values``, ``max_age``).
        """
        algs: tuple[tuple[str, str], ...] = (("algs", " ".join(self.algorithms)),)
        if error is None:
            return Challenge(scheme="DPoP", realm=realm, extra=algs + extra)
        bearer = error.challenge(realm, include_description=include_description, extra=extra)
        assert bearer is not None
        return Challenge(
            scheme="DPoP",
            realm=realm,
            error=bearer.error,
            error_description=bearer.error_description,
            scope=bearer.scope,
            extra=algs + bearer.extra,
        )


@dataclass(frozen=True, slots=True)
class DPoPProof:
    """A proof that passed every stateless check.

    Attributes:
        jkt: the RFC 7638 SHA-256 thumbprint of the proof key (base64url).
        jti: the proof's unique identifier, for the replay store.
        iat: when the proof was made.
        nonce: the server nonce it carries, if any.
    """

    jkt: str
    jti: str
    iat: float
    nonce: str | None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def access_token_hash(token: str) -> str:
    """``ath`` (RFC 9449 §4.2): base64url of the SHA-256 of the token's ASCII bytes."""
    return _b64url(hashlib.sha256(token.encode("ascii", "surrogateescape")).digest())


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK, base64url without padding.

    Raises:
        ValueError: an unsupported ``kty`` or a required member that is missing
            or not a string.
    """
    kty = jwk.get("kty")
    members = _THUMBPRINT_MEMBERS.get(kty) if isinstance(kty, str) else None
    if members is None:
        raise ValueError("unsupported kty")
    picked: dict[str, str] = {}
    for name in members:
        value = jwk.get(name)
        if not isinstance(value, str):
            raise ValueError(f"JWK member {name} missing")
        picked[name] = value
    # RFC 7638 §3.3: no whitespace, members in lexicographic order.
    canonical = json.dumps(picked, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return _b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def _normalize_path(path: str) -> str:
    # RFC 3986 §6.2.2.2: decode percent-encoded unreserved characters,
    # upper-case the hex digits of the rest.
    def fix(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else "%" + match.group(1).upper()

    path = _PERCENT.sub(fix, path)
    # RFC 3986 §5.2.4 / §6.2.2.3: remove dot segments.
    output: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == ".":
            continue
        if segment == "..":
            if output:
                output.pop()
            continue
        output.append(segment)
    if path.endswith(("/.", "/..")):
        output.append("")
    # RFC 3986 §6.2.3: an empty path is "/" for http(s).
    return "/" + "/".join(output)


def normalize_htu(uri: str) -> str:
    """``uri`` without query and fragment, normalised per RFC 3986 §6.2.2-6.2.3.

    Lower-case scheme and host, no default port, ``/`` for an empty path,
    percent-encoding normalised and dot segments removed, so that two spellings
    of one URI compare equal (RFC 9449 §4.3 check 9).

    Raises:
        ValueError: not an absolute ``http``/``https`` URI, or userinfo present.
    """
    if len(uri) > MAX_PROOF_BYTES or any(ord(c) < 0x21 or ord(c) > 0x7E for c in uri):
        raise ValueError("htu is not a printable ASCII URI")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.netloc or "@" in parts.netloc:
        raise ValueError("htu is not an absolute http(s) URI")
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError("htu has no host")
    port = parts.port  # raises ValueError on a malformed port
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = parts.path if parts.path.startswith("/") else "/" + parts.path
    return f"{scheme}://{netloc}{_normalize_path(path)}"


def _claim_str(payload: Mapping[str, Any], name: str, limit: int = MAX_PROOF_BYTES) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InvalidDPoPProof(f"DPoP proof {name} claim missing or malformed")
    return value


def check_proof(
    proof: str,
    *,
    method: str,
    url: str,
    access_token: str | None,
    now: float,
    settings: DPoPSettings,
) -> DPoPProof:
    """Check one DPoP proof against a request (RFC 9449 §4.3), statelessly.

    Args:
        proof: the single ``DPoP`` header value.
        method: the request method (``htm`` must equal it).
        url: the request URI as the client addressed it; query and fragment
            are ignored (``htu``).
        access_token: the token the request presents; ``ath`` must be its
            hash. ``None`` only where no token is presented (never here at a
            resource server, kept for token endpoints).
        now: the current time.
        settings: allowed algorithms and the ``iat`` window.

    Returns:
        The proof's key thumbprint, ``jti``, ``iat`` and ``nonce``.

    Raises:
        InvalidDPoPProof: any check failed; answer 401 with a ``DPoP`` challenge.
    """
    if len(proof) > MAX_PROOF_BYTES:
        raise InvalidDPoPProof("DPoP proof too large")
    if proof.count(".") != 2:
        raise InvalidDPoPProof("DPoP proof is not a JWS")
    try:
        jws = parse_jws(proof.strip(" \t"))
    except TokenError:
        raise InvalidDPoPProof("malformed DPoP proof") from None
    header = jws.header
    # §4.3 check 4: typ is exactly dpop+jwt (RFC 9449 §4.2; no media-type prefix).
    if header.get("typ") != "dpop+jwt":
        raise InvalidDPoPProof("DPoP proof typ must be dpop+jwt")
    alg = header.get("alg")
    # §4.3 check 5: an asymmetric algorithm we allow; never none or HMAC.
    if not isinstance(alg, str) or alg not in settings.algorithms:
        raise InvalidDPoPProof("DPoP proof alg not allowed")
    if "crit" in header:
        raise InvalidDPoPProof("DPoP proof uses an unsupported critical header")
    jwk = header.get("jwk")
    # §4.3 check 7: the jwk header is a public key.
    if not isinstance(jwk, Mapping):
        raise InvalidDPoPProof("DPoP proof has no jwk header")
    if _PRIVATE_MEMBERS.intersection(jwk):
        raise InvalidDPoPProof("DPoP proof jwk is not a public key")
    try:
        key = parse_jwk(jwk)
        jkt = jwk_thumbprint(jwk)
    except ValueError:
        raise InvalidDPoPProof("DPoP proof jwk is malformed or unsupported") from None
    verifier = key.verifiers.get(alg)
    # §4.3 check 6: the signature verifies with the jwk (alg bound to the key type).
    if verifier is None or not verifier(jws.signing_input, jws.signature):
        raise InvalidDPoPProof("DPoP proof signature is invalid")
    payload = jws.payload
    # §4.3 check 3: all required claims.
    jti = _claim_str(payload, "jti", MAX_JTI_LENGTH)
    htm = _claim_str(payload, "htm", 32)
    htu = _claim_str(payload, "htu")
    iat = payload.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float) or iat != iat or abs(iat) > 1e12:
        raise InvalidDPoPProof("DPoP proof iat claim missing or malformed")
    # §4.3 check 8: htm equals the method (methods are case-sensitive, RFC 9110 §9.1).
    if not _METHOD.fullmatch(htm) or htm != method:
        raise InvalidDPoPProof("DPoP proof htm does not match the request method")
    # §4.3 check 9: htu equals the request URI, query and fragment ignored.
    try:
        same_uri = normalize_htu(htu) == normalize_htu(url)
    except ValueError:
        same_uri = False
    if not same_uri:
        raise InvalidDPoPProof("DPoP proof htu does not match the request URI")
    # §4.3 check 11 and §11.1: iat within the acceptable window.
    if iat > now + settings.leeway:
        raise InvalidDPoPProof("DPoP proof iat is in the future")
    if iat < now - settings.max_age:
        raise InvalidDPoPProof("DPoP proof is too old")
    # §4.3 check 12: ath equals the hash of the presented token.
    if access_token is not None:
        ath = payload.get("ath")
        if not isinstance(ath, str) or not hmac.compare_digest(
            ath.encode("ascii", "replace"), access_token_hash(access_token).encode("ascii")
        ):
            raise InvalidDPoPProof("DPoP proof ath does not match the access token")
    nonce = payload.get("nonce")
    if nonce is not None and (not isinstance(nonce, str) or len(nonce) > 512):
        raise InvalidDPoPProof("DPoP proof nonce is malformed")
    return DPoPProof(jkt=jkt, jti=jti, iat=float(iat), nonce=nonce)


def single_proof(values: Iterable[str]) -> str | None:
    """The one ``DPoP`` header value, or ``None`` when there is none.

    Raises:
        InvalidRequest: several ``DPoP`` fields, or one value holding a list
            (RFC 9449 §4.3 check 1: "not more than one DPoP HTTP request header field").
    """
    found = list(values)
    if len(found) > 1 or (found and "," in found[0]):
        raise InvalidRequest("more than one DPoP proof")
    return found[0] if found else None
