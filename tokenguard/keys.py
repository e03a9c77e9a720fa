"""Verification keys: parsed once, bound to the algorithms their type allows.

No I/O, no framework imports, no clock reads.

RFC 8725 §3.1 and §3.2: a key is used only with algorithms of its own type
(RSA ↔ RS*/PS*, EC P-256 ↔ ES256 only, Ed25519 ↔ EdDSA, octet ↔ HS*), and a
JWK's ``alg``, ``use`` and ``key_ops`` narrow that further. This is what makes
the classic "HS256 signed with the RSA public key" confusion impossible: an
RSA key simply has no HMAC verifier.

Signatures are checked directly with ``cryptography`` (PyJWT's algorithm
objects do the same with an extra layer): one call per token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from ._hmac import KeyedHMAC
from ._logtext import loggable
from .errors import ConfigurationError

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "HMAC_ALGORITHMS",
    "MAX_CANDIDATE_KEYS",
    "MAX_RSA_BITS",
    "MAX_RSA_EXPONENT",
    "MIN_RSA_BITS",
    "KeySet",
    "VerificationKey",
    "is_roca_modulus",
    "parse_jwk",
    "parse_jwks",
]

logger = logging.getLogger("tokenguard.keys")

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
ASYMMETRIC_ALGORITHMS = RSA_ALGORITHMS | {"ES256", "ES384", "ES512", "EdDSA", "Ed25519", "Ed448"}
SUPPORTED_ALGORITHMS = ASYMMETRIC_ALGORITHMS | HMAC_ALGORITHMS

#: RSA keys below this size are refused (RFC 7518 §3.3: "A key of size 2048
#: bits or larger MUST be used").
MIN_RSA_BITS = 2048
#: RSA keys above this size are refused: verification cost grows with the
#: square of the modulus, and a key set is the issuer's to choose. Precedents:
#: AWS KMS and Azure Key Vault stop at 4096 bits, Go's crypto/rsa verifies up
#: to 16384; no provider publishes more than 4096.
MAX_RSA_BITS = 8192
#: Largest RSA public exponent accepted. Everyone uses 65537 (RFC 8017 §A.1.1
#: allows more); a 3072-bit exponent makes each forged token cost milliseconds.
#: Go's crypto/rsa refuses exponents above 2**31 - 1 as well.
MAX_RSA_EXPONENT = 2**31 - 1
#: Keys tried for one token: a token without ``kid`` (or naming one the set
#: does not hold) is checked against at most this many keys that fit its
#: ``alg``, so a forged token costs a few signature checks whatever the size
#: of the key set. Providers that omit ``kid`` publish one or two keys.
MAX_CANDIDATE_KEYS = 4

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_HMAC_DIGEST = {"HS256": "sha256", "HS384": "sha384", "HS512": "sha512"}
# RFC 7518 §3.2: "A key of the same size as the hash output ... or larger MUST be used".
_HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
_EC_CURVES: dict[str, tuple[str, int]] = {
    # curve name -> (the one algorithm it may sign, coordinate size in bytes)
    "secp256r1": ("ES256", 32),
    "secp384r1": ("ES384", 48),
    "secp521r1": ("ES512", 66),
}

Verifier = Callable[[bytes, bytes], bool]
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey


def _rsa_verifier(key: rsa.RSAPublicKey, alg: str) -> Verifier:
    hash_alg = _HASHES[alg[2:]]()
    pad: padding.AsymmetricPadding
    if alg.startswith("PS"):
        # RFC 7518 §3.5: MGF1 with the same hash, salt as long as the hash output.
        pad = padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=hash_alg.digest_size)
    else:
        pad = padding.PKCS1v15()

    def verify(signing_input: bytes, signature: bytes) -> bool:
        try:
            key.verify(signature, signing_input, pad, hash_alg)
        except InvalidSignature:
            return False
        return True

    return verify


def _ec_verifier(key: ec.EllipticCurvePublicKey, alg: str, size: int) -> Verifier:
    hash_alg = ec.ECDSA(_HASHES[alg[2:]]())
    order = _CURVE_ORDERS[key.curve.name]

    def verify(signing_input: bytes, signature: bytes) -> bool:
        # RFC 7518 §3.4: the signature is R || S, each exactly `size` octets.
        # A DER signature, a short one or r/s outside [1, n-1] ("psychic
        # signatures", CVE-2022-21449) never reaches the library.
        if len(signature) != 2 * size:
            return False
        r = int.from_bytes(signature[:size], "big")
        s = int.from_bytes(signature[size:], "big")
        if not (0 < r < order and 0 < s < order):
            return False
        try:
            key.verify(encode_dss_signature(r, s), signing_input, hash_alg)
        except InvalidSignature:
            return False
        return True

    return verify


def _eddsa_verifier(key: ed25519.Ed25519PublicKey | ed448.Ed448PublicKey) -> Verifier:
    def verify(signing_input: bytes, signature: bytes) -> bool:
        try:
            key.verify(signature, signing_input)
        except InvalidSignature:
            return False
        return True

    return verify


def _hmac_verifier(secret: bytes, alg: str) -> Verifier:
    keyed = KeyedHMAC(secret, _HMAC_DIGEST[alg])
    inner, outer = keyed.inner, keyed.outer

    def verify(signing_input: bytes, signature: bytes) -> bool:
        # KeyedHMAC.digest, inlined: this runs for every new token.
        state = inner.copy()
        state.update(signing_input)
        mac = outer.copy()
        mac.update(state.digest())
        # Constant-time comparison: timing must not reveal how many bytes matched.
        return hmac.compare_digest(mac.digest(), signature)

    return verify


# ROCA (CVE-2017-15361): RSA moduli made by a flawed library have n mod p in
# the subgroup generated by 65537 for every small prime p. A random modulus
# passes all these tests with negligible probability; a ROCA modulus always.
_ROCA_PRIMES = (3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89,
                97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167)  # fmt: skip


def _subgroup(generator: int, prime: int) -> frozenset[int]:
    members = {1}
    value = generator % prime
    while value not in members:
        members.add(value)
        value = value * generator % prime
    return frozenset(members)


_ROCA_SUBGROUPS = tuple((p, _subgroup(65537, p)) for p in _ROCA_PRIMES)


def is_roca_modulus(modulus: int) -> bool:
    """Whether an RSA modulus has the ROCA fingerprint (its private key is recoverable)."""
    return all(modulus % prime in members for prime, members in _ROCA_SUBGROUPS)


_CURVE_ORDERS = {
    "secp256r1": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "secp384r1": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
    "secp521r1": int(
        "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA51868783BF2F966B7FC"
        "C0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
        16,
    ),
}


@dataclass(frozen=True, slots=True, eq=False)
class VerificationKey:
    """One key, with a ready verifier per algorithm it may be used with.

    Build keys with :func:`parse_jwk`, :func:`parse_jwks`,
    :meth:`from_public_key` or :meth:`from_secret`; ``verifiers`` maps each
    permitted algorithm to a function ``(signing_input, signature) -> bool``.
    """

    kid: str | None
    kty: str
    verifiers: Mapping[str, Verifier]
    thumbprint: str

    @property
    def algorithms(self) -> frozenset[str]:
        """The algorithms this key may verify."""
        return frozenset(self.verifiers)

    def __repr__(self) -> str:
        # Never print key material; an HMAC key is a secret.
        return f"VerificationKey(kid={self.kid!r}, kty={self.kty!r}, algorithms={sorted(self.verifiers)!r})"

    @classmethod
    def from_public_key(
        cls,
        key: Any,
        *,
        kid: str | None = None,
        algorithms: Iterable[str] | None = None,
    ) -> VerificationKey:
        """Wrap a ``cryptography`` public key (or a PEM / DER encoding of one, or a certificate).

        A private key is refused: a verifier needs only the public half, and
        a private key in an API's configuration is one leak away from letting
        anyone mint tokens. Pass ``key.public_key()``.

        Raises:
            ConfigurationError: a private key, an unsupported key type, an RSA
                key under 2048 or over 8192 bits or with an exponent over
                2**31 - 1, or no algorithm left after narrowing by ``algorithms``.
        """
        if isinstance(key, str):
            key = key.encode()
        if isinstance(key, bytes):
            key = _load_key_bytes(key)
        if isinstance(key, _PRIVATE_KEY_TYPES):
            raise ConfigurationError(
                "a private key was given where a public key is expected; pass its public half (key.public_key())"
            )
        verifiers: dict[str, Verifier]
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < MIN_RSA_BITS:
                raise ConfigurationError(f"RSA keys must have at least {MIN_RSA_BITS} bits")
            if key.key_size > MAX_RSA_BITS:
                raise ConfigurationError(f"RSA key of {key.key_size} bits exceeds the limit of {MAX_RSA_BITS}")
            if key.public_numbers().e > MAX_RSA_EXPONENT:
                raise ConfigurationError("RSA public exponent is unreasonably large (over 2**31 - 1)")
            if is_roca_modulus(key.public_numbers().n):
                raise ConfigurationError("RSA key has the ROCA fingerprint (CVE-2017-15361)")
            kty = "RSA"
            verifiers = {alg: _rsa_verifier(key, alg) for alg in sorted(RSA_ALGORITHMS)}
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if key.curve.name not in _EC_CURVES:
                raise ConfigurationError(f"unsupported EC curve {key.curve.name}")
            alg, size = _EC_CURVES[key.curve.name]
            kty = "EC"
            verifiers = {alg: _ec_verifier(key, alg, size)}
        elif isinstance(key, ed25519.Ed25519PublicKey):
            kty = "OKP"
            verifier = _eddsa_verifier(key)
            verifiers = {"EdDSA": verifier, "Ed25519": verifier}
        elif isinstance(key, ed448.Ed448PublicKey):
            kty = "OKP"
            verifier = _eddsa_verifier(key)
            verifiers = {"EdDSA": verifier, "Ed448": verifier}
        else:
            raise ConfigurationError(f"unsupported key type {type(key).__name__}")
        raw = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return cls._narrowed(kid, kty, verifiers, hashlib.sha256(raw).hexdigest(), algorithms)

    @classmethod
    def from_secret(
        cls,
        secret: str | bytes,
        *,
        kid: str | None = None,
        algorithms: Iterable[str] = ("HS256",),
        allow_short: bool = False,
    ) -> VerificationKey:
        """An HMAC key shared with the issuer.

        Args:
            secret: the shared secret.
            kid: the ``kid`` it answers to (``None``: tokens without one).
            algorithms: the HS* algorithms it may verify.
            allow_short: accept a secret shorter than RFC 7518 §3.2 requires
                (logged at WARNING). Only for a secret a provider issued and
                you cannot change: a short secret can be brute-forced offline
                from a single token.

        Raises:
            ConfigurationError: the secret is shorter than the hash output for
                every requested algorithm (RFC 7518 §3.2) and ``allow_short``
                is not set.
        """
        if isinstance(secret, str):
            secret = secret.encode()
        wanted = set(algorithms)
        unknown = wanted - HMAC_ALGORITHMS
        if unknown:
            raise ConfigurationError(f"not HMAC algorithms: {sorted(unknown)}")
        verifiers = {alg: _hmac_verifier(secret, alg) for alg in sorted(wanted) if len(secret) >= _HMAC_MIN_BYTES[alg]}
        if not verifiers and allow_short and wanted and secret:
            # An explicit opt-in for a provider-issued secret; say so loudly (never the secret itself).
            logger.warning(
                "accepting a %d-byte HMAC secret (kid %s) below RFC 7518 §3.2's minimum for %s: "
                "tokens signed with it can be forged by anyone who brute-forces it",
                len(secret),
                "none" if kid is None else repr(kid)[:80],
                ", ".join(sorted(wanted)),
            )
            verifiers = {alg: _hmac_verifier(secret, alg) for alg in sorted(wanted)}
        if not verifiers:
            raise ConfigurationError(
                "HMAC secret too short: RFC 7518 §3.2 requires at least as many bytes as the hash output (32 for HS256)"
            )
        thumb = hashlib.sha256(b"oct:" + hashlib.sha256(secret).digest()).hexdigest()
        return cls(kid=kid, kty="oct", verifiers=verifiers, thumbprint=thumb)

    @classmethod
    def _narrowed(
        cls,
        kid: str | None,
        kty: str,
        verifiers: dict[str, Verifier],
        thumbprint: str,
        algorithms: Iterable[str] | None,
    ) -> VerificationKey:
        if algorithms is not None:
            allowed = set(algorithms)
            verifiers = {alg: v for alg, v in verifiers.items() if alg in allowed}
            if not verifiers:
                raise ConfigurationError(f"key type {kty} supports none of {sorted(allowed)}")
        return cls(kid=kid, kty=kty, verifiers=verifiers, thumbprint=thumbprint)


_PRIVATE_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)
#: JWK members only a private key has (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2).
_PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth"})


def _load_key_bytes(data: bytes) -> Any:
    stripped = data.strip()
    if stripped.startswith(b"-----BEGIN CERTIFICATE"):
        from cryptography import x509

        return x509.load_pem_x509_certificate(stripped).public_key()
    if stripped.startswith(b"-----BEGIN"):
        if b"PRIVATE KEY" in stripped.split(b"\n", 1)[0]:
            # Not even parsed: the error must not depend on (or echo) its contents.
            raise ConfigurationError(
                "a private key (PEM) was given where a public key is expected; pass the public key PEM"
            )
        try:
            return serialization.load_pem_public_key(stripped)
        except ValueError:
            raise ConfigurationError("not a PEM public key") from None
    if stripped.startswith(b"{"):
        jwk = json.loads(stripped)
        if isinstance(jwk, dict) and _PRIVATE_JWK_MEMBERS & set(jwk):
            raise ConfigurationError("a private JWK was given where a public key is expected")
        return _jwk_public_key(jwk)
    try:
        return serialization.load_der_public_key(data)
    except ValueError:
        raise ConfigurationError("not a DER public key (private keys are refused)") from None


def _b64url(value: object) -> bytes:
    if not isinstance(value, str):
        raise ValueError("not a base64url string")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _jwk_public_key(jwk: Mapping[str, Any]) -> Any:
    kty = jwk.get("kty")
    data = dict(jwk)
    if kty == "RSA":
        if "n" not in data or "e" not in data:
            raise ValueError("RSA key without n or e")
        # Drop private members: we verify only, and a private JWK in a JWKS is a leak upstream.
        public = {k: data[k] for k in ("kty", "n", "e")}
        return RSAAlgorithm.from_jwk(public)
    if kty == "EC":
        public = {k: data[k] for k in ("kty", "crv", "x", "y") if k in data}
        return ECAlgorithm.from_jwk(public)
    if kty == "OKP":
        public = {k: data[k] for k in ("kty", "crv", "x") if k in data}
        return OKPAlgorithm.from_jwk(public)
    # Reasons reach the log: a kty from a fetched JWKS is escaped and cut.
    raise ValueError(f"unsupported kty {loggable(kty, 16)}")


def parse_jwk(jwk: Mapping[str, Any], *, allow_symmetric: bool = False) -> VerificationKey:
    """Build a :class:`VerificationKey` from one JWK (RFC 7517).

    ``use`` other than ``sig``, ``key_ops`` without ``verify`` and an ``alg``
    that does not fit the key type all make the key unusable. Symmetric
    (``oct``) keys are refused unless ``allow_symmetric``: a published key set
    holding a shared secret is a misconfiguration, not a key to trust.

    Raises:
        ValueError: the JWK is malformed, unsupported or unusable for signatures.
    """
    if not isinstance(jwk, Mapping):
        raise ValueError("JWK is not an object")
    if jwk.get("kty") != "oct" and _PRIVATE_JWK_MEMBERS & set(jwk):
        # A private JWK where a public key is expected: refused, not trimmed,
        # so the leak is noticed (upstream, or in the configuration).
        raise ValueError("private key material in a public JWK")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise ValueError("kid is not a string")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise ValueError("key is not for signatures (use)")
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise ValueError("key is not for verification (key_ops)")
    alg = jwk.get("alg")
    if alg is not None and (not isinstance(alg, str) or alg not in SUPPORTED_ALGORITHMS):
        raise ValueError("unsupported alg on key")
    algorithms = None if alg is None else (alg,)
    kty = jwk.get("kty")
    try:
        if kty == "oct":
            if not allow_symmetric:
                raise ValueError("symmetric keys are not accepted from a key set")
            secret = _b64url(jwk.get("k"))
            return VerificationKey.from_secret(secret, kid=kid, algorithms=algorithms or sorted(HMAC_ALGORITHMS))
        return VerificationKey.from_public_key(_jwk_public_key(jwk), kid=kid, algorithms=algorithms)
    except ConfigurationError as exc:
        raise ValueError(str(exc)) from None
    except (binascii.Error, KeyError, TypeError, ValueError) as exc:
        # PyJWT's messages can echo the key; keep only the kind of failure.
        raise ValueError(f"malformed {loggable(kty, 16)} key ({type(exc).__name__})") from None
    except Exception as exc:  # noqa: BLE001 - third-party parsers raise varied errors
        raise ValueError(f"malformed {loggable(kty, 16)} key ({type(exc).__name__})") from None


#: Where KeySet.candidates() keeps its answer for kids the set does not hold.
_OTHER_KID = object()  # not a str: no kid can be mistaken for it


@dataclass(frozen=True, slots=True)
class KeySet:
    """Keys by ``kid``, plus the keys that have none.

    Lookups are dictionary reads: the hot path never scans a list when the
    token names its key.
    """

    by_kid: Mapping[str, tuple[VerificationKey, ...]]
    without_kid: tuple[VerificationKey, ...]
    #: candidates() answers by (kid, alg): the kids this set holds, None, or _OTHER_KID.
    _chosen: dict[tuple[object, str], tuple[VerificationKey, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def of(cls, keys: Sequence[VerificationKey]) -> KeySet:
        """Index ``keys``."""
        by_kid: dict[str, list[VerificationKey]] = {}
        without: list[VerificationKey] = []
        for key in keys:
            if key.kid is None:
                without.append(key)
            else:
                by_kid.setdefault(key.kid, []).append(key)
        return cls({k: tuple(v) for k, v in by_kid.items()}, tuple(without))

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_kid.values()) + len(self.without_kid)

    def candidates(self, kid: str | None, alg: str) -> tuple[VerificationKey, ...]:
        """Keys that may verify a token with this ``kid`` and ``alg``.

        A token with a ``kid`` is checked against keys with that ``kid`` and
        keys configured without one (a static PEM key has no kid); a token
        without a ``kid`` against every key able to verify ``alg``; never more
        than :data:`MAX_CANDIDATE_KEYS` of them, in key-set order. Answers
        are remembered: one per kid the set holds, and one shared by every
        other kid (a token may make up any number of them).
        """
        # Every kid the set does not hold gets the same answer (the keys
        # configured without one), remembered once under _OTHER_KID.
        slot: object = kid if kid is None or kid in self.by_kid else _OTHER_KID
        found = self._chosen.get((slot, alg))
        if found is not None:
            return found
        if kid is None:
            pool: Iterable[VerificationKey] = (*self.without_kid, *(k for group in self.by_kid.values() for k in group))
        else:
            pool = (*self.by_kid.get(kid, ()), *self.without_kid)
        # Type and alg must fit, and at most MAX_CANDIDATE_KEYS are tried:
        # the work one forged token can cause stays bounded.
        found = tuple(key for key in pool if alg in key.verifiers)[:MAX_CANDIDATE_KEYS]
        if alg in SUPPORTED_ALGORITHMS:
            self._chosen[slot, alg] = found
        return found

    def has_kid(self, kid: str) -> bool:
        """Whether some key carries ``kid`` (or a kid-less key could stand for it)."""
        return kid in self.by_kid or bool(self.without_kid)

    def thumbprints(self) -> frozenset[str]:
        """Fingerprints of every key, used to drop cache entries of removed keys."""
        return frozenset(key.thumbprint for key in (*self.without_kid, *(k for g in self.by_kid.values() for k in g)))


def parse_jwks(document: object, *, max_keys: int = 100, allow_symmetric: bool = False) -> tuple[KeySet, list[str]]:
    """Parse a JWK Set document, skipping keys that cannot be used.

    Returns the usable keys and one reason per skipped key (for the log; the
    reasons never contain key material). Symmetric keys are refused in a
    fetched key set, and in any set that also holds public keys: a set mixing
    both lets a public key's owner pick which kind of check runs.

    Raises:
        ValueError: the document is not a JWK Set, or has more than ``max_keys`` keys.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK Set (no 'keys' array)")
    raw_keys = document["keys"]
    if len(raw_keys) > max_keys:
        raise ValueError(f"JWK Set has {len(raw_keys)} keys, more than the limit of {max_keys}")
    mixed = any(isinstance(k, dict) and k.get("kty") == "oct" for k in raw_keys) and any(
        isinstance(k, dict) and k.get("kty") != "oct" for k in raw_keys
    )
    keys: list[VerificationKey] = []
    skipped: list[str] = []
    for index, jwk in enumerate(raw_keys):
        label = jwk.get("kid") if isinstance(jwk, dict) and isinstance(jwk.get("kid"), str) else None
        where = f"key #{index}{f' (kid {loggable(label, 64)})' if label else ''}"
        if mixed and isinstance(jwk, dict) and jwk.get("kty") == "oct":
            skipped.append(f"{where}: symmetric key in a set with public keys")
            continue
        try:
            keys.append(parse_jwk(jwk, allow_symmetric=allow_symmetric))
        except ValueError as exc:
            skipped.append(f"{where}: {exc}")
    # Two keys of one type under one kid make "the key for this token"
    # ambiguous; use neither rather than guess.
    seen = Counter((key.kid, key.kty) for key in keys if key.kid is not None)
    ambiguous = {pair for pair, count in seen.items() if count > 1}
    if ambiguous:
        skipped.extend(
            f"kid {loggable(kid, 64)}: {count} {kty} keys share it" for (kid, kty), count in seen.items() if count > 1
        )
        keys = [key for key in keys if (key.kid, key.kty) not in ambiguous]
    return KeySet.of(keys), skipped
