"""Atheris fuzz target for DPoP proofs (tokenguard.dpop.check_proof) and the htu normaliser.

Every input must either pass or raise InvalidDPoPProof (ValueError for the
normaliser); any other exception is a crash.

    python fuzz/fuzz_dpop.py -max_total_time=60
"""

from __future__ import annotations

import sys
import time

import atheris

with atheris.instrument_imports():
    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import ec

    from tokenguard.dpop import DPoPSettings, InvalidDPoPProof, access_token_hash, check_proof, normalize_htu

URL = "https://api.fuzz/books"
TOKEN = "fuzz-token"
SETTINGS = DPoPSettings()
_KEY = ec.generate_private_key(ec.SECP256R1())
_JWK = pyjwt.algorithms.ECAlgorithm.to_jwk(_KEY.public_key(), as_dict=True)
NOW = time.time()
SEED = pyjwt.encode(
    {"jti": "j", "htm": "GET", "htu": URL, "iat": int(NOW), "ath": access_token_hash(TOKEN)},
    _KEY,
    "ES256",
    {"typ": "dpop+jwt", "jwk": _JWK},
)


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    choice = provider.ConsumeIntInRange(0, 2)
    text = provider.ConsumeUnicodeNoSurrogates(provider.remaining_bytes())
    try:
        if choice == 0:
            check_proof(text, method="GET", url=URL, access_token=TOKEN, now=NOW, settings=SETTINGS)
        elif choice == 1:
            # Splice fuzz text into a real proof so the deeper checks are reached.
            head, payload, sig = SEED.split(".")
            proof = ".".join([head, payload[: len(text) % (len(payload) + 1)] + text, sig])
            check_proof(proof, method="GET", url=URL, access_token=TOKEN, now=NOW, settings=SETTINGS)
        else:
            try:
                normalize_htu(text)
            except ValueError:
                pass
    except InvalidDPoPProof:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
