"""Token-building helpers for tests that need hand-made (often hostile) JWTs."""

from __future__ import annotations

import base64
import json
import time as _time
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


class Clock:
    """A controllable clock starting at real time; tests move ``now`` forward."""

    def __init__(self) -> None:
        self.now = _time.time()

    def __call__(self) -> float:
        return self.now


ISS = "https://issuer.test"
AUD = "https://api.test"
NOW = 1_800_000_000.0

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()
HMAC_SECRET = b"k" * 32


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "sub": "user",
        "iat": int(NOW),
        "exp": int(NOW) + 300,
        "scope": "read",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, Any], key: Any = None, alg: str = "RS256", headers: dict[str, Any] | None = None) -> str:
    key = RSA_KEY if key is None else key
    return pyjwt.encode(payload, key, algorithm=alg, headers={"kid": "k1", **(headers or {})})


def jwk_of(private: Any, kid: str = "k1", alg: str | None = None) -> dict[str, Any]:
    if isinstance(private, rsa.RSAPrivateKey):
        jwk = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    elif isinstance(private, ec.EllipticCurvePrivateKey):
        jwk = json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    else:
        jwk = json.loads(pyjwt.algorithms.OKPAlgorithm.to_jwk(private.public_key()))
    jwk["kid"] = kid
    if alg:
        jwk["alg"] = alg
    return jwk
