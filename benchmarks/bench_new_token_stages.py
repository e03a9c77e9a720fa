"""Where a new token's time goes: the verify path cut into its stages.

A never-seen RS256 token (by default; ``--alg`` for another) costs its
signature plus the Python work around it. This script times each stage of
``TokenGuard.verify_sync`` on its own, over the same list of fresh tokens,
in round-robin rounds (every round times every stage once; the median of
the rounds is kept; CPU time of this process, which a busy machine disturbs
less than wall time), next to the whole path and the signature floor
(``cryptography``'s ``verify()`` alone). Each stage gets exactly the inputs
the previous ones produced, computed outside its timing.

    python benchmarks/bench_new_token_stages.py [--alg RS256] [--rounds 7] [--tokens 3000] [--quick]

Prints a table and writes ``benchmarks/results/new_token_stages.json``.

The stages call the library's internals, so this script follows them when
they change; the names of the stages stay put so that runs compare.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_verify import AUD, ISS, floor_verifier, make_key, mint  # noqa: E402

from tokenguard import TokenGuard  # noqa: E402
from tokenguard import jwt as tg_jwt  # noqa: E402
from tokenguard.jwt import check_claims, check_signature, parse_jws, peek_issuer  # noqa: E402
from tokenguard.results import jwt_entry  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _guard(alg: str, public: Any) -> TokenGuard:
    if alg == "HS256":
        return TokenGuard.from_keys(issuer=ISS, audience=AUD, hmac_keys={"k1": public}, algorithms=["HS256"])
    return TokenGuard.from_keys(issuer=ISS, audience=AUD, keys=[public], algorithms=[alg])


def stages(guard: TokenGuard, tokens: list[str]) -> tuple[dict[str, Callable[[], None]], Callable[[], None]]:
    """The stage runners (each over every token) and a ``prepare`` to call before each round."""
    router = guard._router
    runtime = next(iter(router.at_hand.values()))
    policy = runtime.policy
    now = guard.clock()
    hash_inner, hash_outer = guard._hash_inner, guard._hash_outer
    cache_get = guard._cache_get
    # Inputs each stage needs, from the stages before it (not timed).
    split = [token.split(".") for token in tokens]
    jwss = [parse_jws(token) for token in tokens]
    raw_payloads = [tg_jwt._b64decode(parts[1]) for parts in split]
    keys = [runtime.keys_at_hand(jws, now) for jws in jwss]
    checked = [runtime._checked_header(jws) for jws in jwss]
    cache_keys = [guard._hasher.cache_key(token) for token in tokens]
    verified: list[tuple[Any, str]] = []

    def prepare() -> None:
        guard._cache.clear()

    def hmac_and_miss() -> None:
        for token in tokens:
            inner = hash_inner.copy()
            inner.update(token.encode("utf-8", "surrogateescape"))
            outer = hash_outer.copy()
            outer.update(inner.digest())
            key = outer.digest()
            entry = cache_get(key)
            if entry is not None:  # what Router.verify_miss does before routing
                router.retire(guard._cache, key, entry, now)

    def split_and_header() -> None:
        header = tg_jwt._header
        for token in tokens:
            tg_jwt.looks_like_jws(token)
            parts = token.split(".")
            if len(parts) != 3 or not parts[0] or "+" in token or "/" in token or "=" in token:
                raise AssertionError
            header(parts[0])

    def base64() -> None:
        decode = tg_jwt._b64decode
        for parts in split:
            decode(parts[1])
            decode(parts[2])

    def json() -> None:
        obj = tg_jwt._json_object
        for raw in raw_payloads:
            obj(raw, "payload")

    def jws_object() -> None:
        jws_type = tg_jwt.UnverifiedJWS
        for token, jws, parts in zip(tokens, jwss, split, strict=True):
            jws_type(jws.header, jws.payload, token[: len(parts[0]) + len(parts[1]) + 1].encode("ascii"), b"", parts[0])

    def issuer_route() -> None:
        at_hand = router.at_hand
        for jws in jwss:
            iss = peek_issuer(jws)
            found = at_hand.get(iss)
            found.keys_at_hand(jws, now)
            found._checked_header(jws)

    def claim_checks() -> None:
        for jws in jwss:
            check_claims(jws.payload, policy, now)

    def signature() -> None:
        for jws, keyset, (alg, kid) in zip(jwss, keys, checked, strict=True):
            check_signature(jws, keyset, alg, kid)

    def claims_object() -> None:
        verified.clear()
        make = tg_jwt.verified_jwt_claims
        scope_claims = policy.scope_claims
        obj = tg_jwt._json_object
        for raw in raw_payloads:
            # Parsed here (and subtracted below) so that the dict is as warm
            # in the CPU caches as parse_jws leaves it.
            payload = obj(raw, "payload")
            dates = check_claims(payload, policy, now)
            verified.append((make(payload, scope_claims, *dates), "t"))

    def entry_and_store() -> None:
        keep = guard._store.keep
        entry = jwt_entry
        thumbprint = next(iter(runtime.current_thumbprints))
        for key, (claims, _) in zip(cache_keys, verified, strict=True):
            router.admit(claims)
            keep(key, entry(claims, runtime, thumbprint, now, None), now)

    runners = {
        "cache-key HMAC and miss": hmac_and_miss,
        "split and header memo": split_and_header,
        "base64 (payload, signature)": base64,
        "JSON with duplicate check": json,
        "UnverifiedJWS": jws_object,
        "issuer route, keys, header check": issuer_route,
        "claim checks": claim_checks,
        "signature (inside the pipeline)": signature,
        "claims object": claims_object,
        "admit, cache entry and store": entry_and_store,
    }
    return runners, prepare


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alg", default="RS256")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=3000)
    parser.add_argument("--quick", action="store_true", help="one short round (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.tokens = 1, 50

    private, public = make_key(args.alg)
    tokens = [mint(args.alg, private) for _ in range(args.tokens)]
    guard = _guard(args.alg, public)
    guard.verify_sync(mint(args.alg, private))  # warm: keys, memoised header, scope strings
    floor = floor_verifier(args.alg, public)
    runners, prepare = stages(guard, tokens)

    def whole() -> None:
        verify = guard.verify_sync
        for token in tokens:
            verify(token)

    def floor_all() -> None:
        for token in tokens:
            floor(token)

    timed: dict[str, Callable[[], None]] = {**runners, "whole verify_sync (new tokens)": whole, "floor": floor_all}
    samples: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(args.rounds):
        for name, run in timed.items():
            prepare()
            gc.collect()
            start = time.process_time()
            run()
            samples[name].append((time.process_time() - start) / len(tokens) * 1e6)
    med = {name: statistics.median(values) for name, values in samples.items()}
    # The claims stage re-runs the JSON parse and the claim checks (for a warm
    # dict and the dates): count them once.
    med["claims object"] -= med["claim checks"] + med["JSON with duplicate check"]

    print(f"{args.alg} new token, µs per token, median of {args.rounds} rounds of {args.tokens} fresh tokens")
    print(f"Python {platform.python_version()}, {platform.machine()}")
    print(f"| {'stage':<36} | {'µs':>6} | {'spread':>13} |")
    print(f"|{'-' * 38}|{'-' * 8}|{'-' * 15}|")
    for name, values in samples.items():
        low, high = min(values), max(values)
        spread = "(with JSON, checks)" if name == "claims object" else f"{low:>5.1f}–{high:<6.1f}"
        print(f"| {name:<36} | {med[name]:>6.2f} | {spread:>13} |")
    around = sum(v for name, v in med.items() if name in runners and not name.startswith("signature"))
    whole_us, floor_us = med["whole verify_sync (new tokens)"], med["floor"]
    print(f"\nsum of stages but the signature: {around:.1f} µs; whole minus floor: {whole_us - floor_us:.1f} µs")
    print(f"whole / floor: {whole_us / floor_us:.2f}")
    RESULTS.mkdir(exist_ok=True)
    result = {
        "alg": args.alg,
        "python": platform.python_version(),
        "rounds": args.rounds,
        "tokens": args.tokens,
        "timer": "process_time",
        "stages_us": med,
        "samples_us": samples,
    }
    (RESULTS / "new_token_stages.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
