"""Verify micro-benchmark: tokenguard against its Python peers and the physical floor.

One process, one run, round-robin rounds, so that ratios hold on a noisy
machine. For each algorithm (RS256, PS256, ES256, EdDSA, HS256) and a
realistic ~600-byte access token:

* tokenguard, new token (cold: the cache is emptied before each round, so
  every token is verified afresh: signature, claims, cache store);
* tokenguard, repeated token (verified-token cache hit);
* PyJWT, joserfc, authlib.jose, python-jose, jwcrypto: each with the key
  object, an algorithm allow-list and iss/aud/exp checks;
* floor: ``cryptography``'s ``verify()`` alone on the same bytes, and
  HMAC-SHA256 + dict lookup for the cache path.

tokenguard's cold path, the floor and every peer verify the same list of
never-seen tokens in each round (the peers cache nothing, so every token is
new to them too); each round times every candidate once, and the median of
the rounds is kept.

Prints a table and writes ``benchmarks/results/verify.json``.

    python benchmarks/bench_verify.py [--rounds 7] [--quick]
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import os
import platform
import statistics
import sys
import time
import timeit
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt as pyjwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tokenguard import TokenGuard
from tokenguard.cache import TokenHasher

ISS = "https://issuer.example.com/oidc"
AUD = "https://api.example.com"
ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA", "HS256")
RESULTS = Path(__file__).resolve().parent / "results"


def make_key(alg: str) -> tuple[Any, Any]:
    """(private key or secret, public key or secret)."""
    if alg in ("RS256", "PS256"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return key, key.public_key()
    if alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
        return key, key.public_key()
    if alg == "EdDSA":
        key = ed25519.Ed25519PrivateKey.generate()
        return key, key.public_key()
    secret = os.urandom(32)
    return secret, secret


def claims() -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": ISS,
        "sub": "248289761001",
        "aud": AUD,
        "exp": now + 3600,
        "iat": now,
        "scope": "openid profile email library-api-checked-books library-api-loans offline_access",
        "client_id": "s6BhdRkqt3-web-frontend-application",
        "jti": uuid.uuid4().hex,
        "auth_time": now - 60,
        "acr": "urn:mace:incommon:iap:silver",
        "amr": ["pwd", "otp"],
        "sid": uuid.uuid4().hex,
    }


def mint(alg: str, private: Any) -> str:
    return pyjwt.encode(claims(), private, algorithm=alg, headers={"kid": "k1", "typ": "at+jwt"})


def floor_verifier(alg: str, public: Any) -> Callable[[str], None]:
    """cryptography's verify() alone (plus the base64 decode it cannot do without)."""

    def b64(segment: str) -> bytes:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))

    if alg == "RS256":

        def verify(token: str) -> None:
            signing_input, _, sig = token.rpartition(".")
            public.verify(b64(sig), signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    elif alg == "PS256":
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)

        def verify(token: str) -> None:
            signing_input, _, sig = token.rpartition(".")
            public.verify(b64(sig), signing_input.encode(), pss, hashes.SHA256())
    elif alg == "ES256":

        def verify(token: str) -> None:
            signing_input, _, sig = token.rpartition(".")
            raw = b64(sig)
            der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
            public.verify(der, signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    elif alg == "EdDSA":

        def verify(token: str) -> None:
            signing_input, _, sig = token.rpartition(".")
            public.verify(b64(sig), signing_input.encode())
    else:

        def verify(token: str) -> None:
            signing_input, _, sig = token.rpartition(".")
            if not hmac.compare_digest(hmac.digest(public, signing_input.encode(), "sha256"), b64(sig)):
                raise InvalidSignature

    return verify


def peers(alg: str, public: Any) -> dict[str, Callable[[str], Any]]:
    """Each peer library doing the same checks: key object, allow-list, iss, aud, exp."""
    out: dict[str, Callable[[str], Any]] = {}

    def pyjwt_decode(token: str) -> Any:
        return pyjwt.decode(token, public, algorithms=[alg], audience=AUD, issuer=ISS)

    out["pyjwt"] = pyjwt_decode
    try:
        from joserfc import jwt as jrfc_jwt
        from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

        key_type = {"RS256": RSAKey, "PS256": RSAKey, "ES256": ECKey, "EdDSA": OKPKey, "HS256": OctKey}[alg]
        jkey = key_type.import_key(public)
        registry = jrfc_jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": ISS}, aud={"essential": True, "value": AUD}
        )
        jalg = "Ed25519" if alg == "EdDSA" else alg

        def joserfc_decode(token: str) -> Any:
            decoded = jrfc_jwt.decode(token, jkey, algorithms=[jalg])
            registry.validate(decoded.claims)
            return decoded.claims

        try:
            joserfc_decode(mint_cache[alg])
        except Exception:  # noqa: BLE001 - EdDSA naming differs across joserfc versions
            jalg = alg
        out["joserfc"] = joserfc_decode
    except ImportError:
        pass
    try:
        from authlib.jose import JsonWebKey, JsonWebToken
        from cryptography.hazmat.primitives import serialization

        if alg == "HS256":
            akey = JsonWebKey.import_key({"kty": "oct", "k": base64.urlsafe_b64encode(public).rstrip(b"=").decode()})
        else:
            akey = JsonWebKey.import_key(
                public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            )
        ajwt = JsonWebToken([alg])
        options = {"iss": {"essential": True, "value": ISS}, "aud": {"essential": True, "value": AUD}}

        def authlib_decode(token: str) -> Any:
            decoded = ajwt.decode(token, akey, claims_options=options)
            decoded.validate()
            return decoded

        out["authlib"] = authlib_decode
    except ImportError:
        pass
    try:
        from jose import jwt as jose_jwt

        if alg != "EdDSA":  # python-jose has no EdDSA
            from cryptography.hazmat.primitives import serialization

            jose_key = (
                public
                if alg == "HS256"
                else public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            )

            def jose_decode(token: str) -> Any:
                return jose_jwt.decode(token, jose_key, algorithms=[alg], audience=AUD, issuer=ISS)

            out["python-jose"] = jose_decode
    except ImportError:
        pass
    try:
        from jwcrypto import jwk as jwc_jwk
        from jwcrypto import jwt as jwc_jwt

        if alg == "HS256":
            jwckey = jwc_jwk.JWK(kty="oct", k=base64.urlsafe_b64encode(public).rstrip(b"=").decode())
        else:
            jwckey = jwc_jwk.JWK.from_pyca(public)
        check = {"iss": ISS, "aud": AUD, "exp": None}

        def jwcrypto_decode(token: str) -> Any:
            return jwc_jwt.JWT(jwt=token, key=jwckey, algs=[alg], check_claims=check).claims

        out["jwcrypto"] = jwcrypto_decode
    except ImportError:
        pass
    return out


mint_cache: dict[str, str] = {}

#: The timer: wall time by default; ``--cpu`` takes this process's CPU time,
#: which a machine busy with other work disturbs far less.
_clock: Callable[[], float] = time.perf_counter


def per_call_us(func: Callable[[], Any], rounds: int, budget: float) -> float:
    """Median of ``rounds`` timings, in microseconds per call."""
    number = max(1, int(budget / max(_one(func), 1e-7)))
    samples = [timeit.timeit(func, timer=_clock, number=number) / number * 1e6 for _ in range(rounds)]
    return statistics.median(samples)


def _one(func: Callable[[], Any]) -> float:
    start = _clock()
    func()
    return _clock() - start


def bench_algorithm(alg: str, rounds: int, budget: float) -> dict[str, float]:
    private, public = make_key(alg)
    token = mint(alg, private)
    mint_cache[alg] = token
    if alg == "HS256":
        guard = TokenGuard.from_keys(issuer=ISS, audience=AUD, hmac_keys={"k1": public}, algorithms=["HS256"])
    else:
        guard = TokenGuard.from_keys(issuer=ISS, audience=AUD, keys=[public], algorithms=[alg])
    assert guard.verify_sync(token).subject == "248289761001"
    floor = floor_verifier(alg, public)
    floor(token)

    # Cold: every call verifies a token never seen before (signature, claims,
    # cache store), as a new token costs in production.
    fresh = [mint(alg, private) for _ in range(300 if budget < 0.05 else 3000)]

    def cold_all() -> None:
        guard._cache.clear()
        for one in fresh:
            guard.verify_sync(one)

    def floor_all() -> None:
        for one in fresh:
            floor(one)

    # Peers cache nothing: every token is new to them. They verify the same
    # never-seen tokens as tokenguard's cold run and the floor, so all pay
    # the same cold-memory cost per token.
    runs: dict[str, Callable[[], None]] = {"tokenguard_cold": cold_all, "floor_verify": floor_all}
    for name, decode in peers(alg, public).items():
        try:
            decode(token)
        except Exception as exc:  # noqa: BLE001 - a peer that cannot do this algorithm is reported, not fatal
            print(f"  {name} cannot verify {alg}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue

        def peer_all(decode: Callable[[str], Any] = decode) -> None:
            for one in fresh:
                decode(one)

        runs[name] = peer_all
    # Round-robin: every round times each candidate once, so a slow spell of
    # this shared machine hits them all alike; the median of the rounds is kept.
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            samples[name].append(_time_each(run, len(fresh)))
    row = {name: statistics.median(values) for name, values in samples.items()}
    if "authlib" in samples:
        # Rounds in which a new token cost tokenguard less than authlib (same tokens, same round).
        row["rounds_ahead_of_authlib"] = float(
            sum(ours < theirs for ours, theirs in zip(samples["tokenguard_cold"], samples["authlib"], strict=True))
        )
    row["tokenguard_cached"] = per_call_us(lambda: guard.verify_sync(token), rounds, budget)
    row["cache_floor"] = cache_floor_us(token, rounds, budget)
    return row


def _time_each(func: Callable[[], Any], count: int) -> float:
    start = _clock()
    func()
    return (_clock() - start) / count * 1e6


def cache_floor_us(token: str, rounds: int, budget: float) -> float:
    """The cache path's floor for ``token``: its HMAC-SHA256 from keyed states, inlined, and one dict read."""
    inner, outer = TokenHasher().keyed_states()

    def key_of(text: str) -> bytes:
        state = inner.copy()
        state.update(text.encode("utf-8", "surrogateescape"))
        mac = outer.copy()
        mac.update(state.digest())
        digest: bytes = mac.digest()
        return digest

    table = {key_of(token): 1}
    return per_call_us(lambda: table.get(key_of(token)), rounds, budget)


def bytes_per_cached_token(count: int = 100_000) -> float:
    """tracemalloc: memory held per cached verified token, through the real verify path.

    ``count`` distinct tokens (minted beforehand, so the token strings are not
    counted) are verified by one guard; everything the guard keeps for them
    (claims, scopes, cache entry, keys, cache bookkeeping) is counted.
    """
    secret = os.urandom(32)
    guard = TokenGuard.from_keys(issuer=ISS, audience=AUD, hmac_keys={"k1": secret}, algorithms=["HS256"])
    tokens = [mint("HS256", secret) for _ in range(count)]
    guard.verify_sync(mint("HS256", secret))  # warm: keys, memoised headers, scope strings
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for token in tokens:
        guard.verify_sync(token)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return grown / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--budget", type=float, default=0.2, help="seconds per timing sample")
    parser.add_argument("--quick", action="store_true", help="one short round (smoke test)")
    parser.add_argument("--cpu", action="store_true", help="time CPU time of this process, not wall time")
    args = parser.parse_args()
    global _clock
    if args.cpu:
        _clock = time.process_time
    rounds, budget = (1, 0.01) if args.quick else (args.rounds, args.budget)

    table: dict[str, dict[str, float]] = {}
    for alg in ALGORITHMS:
        table[alg] = bench_algorithm(alg, rounds, budget)
    memory = bytes_per_cached_token(2_000 if args.quick else 100_000)

    columns = [
        "tokenguard_cold",
        "floor_verify",
        "tokenguard_cached",
        "cache_floor",
        "pyjwt",
        "joserfc",
        "authlib",
        "python-jose",
        "jwcrypto",
    ]
    timer = "CPU time" if args.cpu else "wall time"
    where = f"Python {platform.python_version()}, {platform.machine()}"
    print(f"\nverify, µs per call (median of {rounds}, {timer}); {where}")
    print(
        f"{'alg':<7}"
        + "".join(f"{c:>18}" for c in columns)
        + f"{'cold/floor':>12}{'pyjwt/cached':>14}{'ahead of authlib':>18}"
    )
    for alg, row in table.items():
        cells = "".join(f"{row[c]:>18.2f}" if c in row else f"{'-':>18}" for c in columns)
        ratio = row["tokenguard_cold"] / row["floor_verify"]
        speedup = row["pyjwt"] / row["tokenguard_cached"]
        ahead = f"{row['rounds_ahead_of_authlib']:.0f}/{rounds}" if "rounds_ahead_of_authlib" in row else "-"
        print(f"{alg:<7}{cells}{ratio:>12.2f}{speedup:>13.0f}x{ahead:>18}")
    print("cache_floor: HMAC-SHA256 of the same token (keyed states, inlined) + one dict read")
    print(f"memory per cached token: {memory:.0f} bytes")

    RESULTS.mkdir(exist_ok=True)
    result = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "rounds": rounds,
        "timer": "process_time" if args.cpu else "perf_counter",
        "verify_us": table,
        "bytes_per_cached_token": memory,
    }
    (RESULTS / "verify.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
