"""Atheris fuzz target for TokenGuard.verify_sync (the token-verification entry point).

Every input must either verify or raise a TokenError; any other exception is a
crash. Keys are static, so the target never touches the network.

    python fuzz/fuzz_verify.py -max_total_time=60        # bounded run (what CI does)
    python fuzz/fuzz_verify.py                           # until stopped
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import ec

    from tokenguard import TokenError, TokenGuard, parse_authorization
    from tokenguard.bearer import parameter_tokens
    from tokenguard.keys import parse_jwks
    from tokenguard.options import AdapterOptions

ISSUER = "https://issuer.fuzz"
AUDIENCE = "https://api.fuzz"
_KEY = ec.generate_private_key(ec.SECP256R1())
_JWK = {**pyjwt.algorithms.ECAlgorithm.to_jwk(_KEY.public_key(), as_dict=True), "kid": "k1"}
GUARD = TokenGuard.from_keys(issuer=ISSUER, audience=AUDIENCE, jwks={"keys": [_JWK]})
OPTIONS = AdapterOptions(public_paths=("/health",), public_prefixes=("/static",))
SEED = pyjwt.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": 4_000_000_000, "sub": "s"}, _KEY, "ES256", {"kid": "k1"})


def test_one_input(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    choice = provider.ConsumeIntInRange(0, 4)
    text = provider.ConsumeUnicodeNoSurrogates(provider.remaining_bytes())
    try:
        if choice == 0:
            GUARD.verify_sync(text)
        elif choice == 1:
            # Splice fuzz text into a real token so the deeper checks are reached.
            head, payload, sig = SEED.split(".")
            GUARD.verify_sync(".".join([head, payload[: len(text) % (len(payload) + 1)] + text, sig]))
        elif choice == 2:
            parse_authorization(text)
        elif choice == 4:
            # Query/form parsing and public-path matching see raw request text.
            parameter_tokens(text.encode("utf-8", "surrogateescape"))
            OPTIONS.is_public(text)
        else:
            try:
                import json

                parse_jwks(json.loads(text))
            except (ValueError, RecursionError):
                pass
    except TokenError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
