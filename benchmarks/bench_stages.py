"""Per-stage breakdown of a new token's verification: where the Python work around the signature goes.

Each never-seen token goes through the stages of ``TokenGuard.verify_sync``'s
miss path in order, as the real pipeline runs them (so the signature
computation evicts the interpreter's working set between stages as it does in
production), with a clock read between stages:

1. ``cache key + miss``: keyed HMAC-SHA256 of the token and the cache read;
2. ``split + header memo``: shape check, ``str.split``, the memoised header;
3. ``base64``: payload and signature segments;
4. ``JSON + duplicate check``: the payload object;
5. ``JWS object``: signing input bytes and the ``UnverifiedJWS``;
6. ``issuer route``: unverified ``iss``, the issuer, its keys at hand;
7. ``header checks``: ``alg``/``kid``/``typ`` (remembered per encoded header);
8. ``claim checks``: ``iss``, ``aud``, dates, ``sub``, required claims;
9. ``signature``: the key's verifier (``cryptography``);
10. ``claims object``: ``TokenClaims`` with interning and scopes, sender-constraint check;
11. ``cache entry + store``: the entry and ``MemoryCache.set``.

In the same shuffled rounds, on the same tokens: the whole ``verify_sync``
(``pipeline``) on a guard of its own, and the signature floor
(``cryptography``'s ``verify()`` plus base64 of the signature, as in
``bench_verify.py``). The clock read's own cost is measured and subtracted
from every stage. Stages call tokenguard's internals directly, so this
script follows them: when the pipeline changes, change it too (the test
suite runs it with ``--quick``).

Medians of the rounds (min-max), µs per token; writes
``benchmarks/results/stages.json``.

    python benchmarks/bench_stages.py [--alg RS256] [--rounds 7] [--tokens 2000] [--quick]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import write_results  # noqa: E402
from bench_verify import ALGORITHMS, AUD, ISS, floor_verifier, make_key, mint  # noqa: E402

from tokenguard import TokenGuard  # noqa: E402
from tokenguard.claims import verified_jwt_claims  # noqa: E402
from tokenguard.jwt import (  # noqa: E402
    UnverifiedJWS,
    _b64decode,
    _header,
    _json_object,
    check_claims,
    check_signature,
    looks_like_jws,
    peek_issuer,
)
from tokenguard.results import jwt_entry  # noqa: E402

STAGES = (
    "cache key + miss",
    "split + header memo",
    "base64",
    "JSON + duplicate check",
    "JWS object",
    "issuer route",
    "header checks",
    "claim checks",
    "signature",
    "claims object",
    "cache entry + store",
)


def _guard(alg: str, public: Any) -> TokenGuard:
    if alg == "HS256":
        return TokenGuard.from_keys(issuer=ISS, audience=AUD, hmac_keys={"k1": public}, algorithms=["HS256"])
    return TokenGuard.from_keys(issuer=ISS, audience=AUD, keys=[public], algorithms=[alg])


def _staged(guard: TokenGuard, tokens: list[str], totals: list[int]) -> None:
    """Run each token through the miss path stage by stage, adding each stage's ns to ``totals``."""
    clock = time.perf_counter_ns
    inner_state, outer_state = guard._hash_inner, guard._hash_outer
    cache_get = guard._cache_get
    router = guard._router
    at_hand = router.at_hand
    store = guard._store
    for token in tokens:
        now = guard.clock()
        t0 = clock()
        # 1. cache key + miss (the inlined hit in verify_sync)
        inner = inner_state.copy()
        inner.update(token.encode("utf-8", "surrogateescape"))
        outer = outer_state.copy()
        outer.update(inner.digest())
        key = outer.digest()
        if cache_get(key) is not None:
            raise SystemExit("a fresh token was found in the cache")
        t1 = clock()
        # 2. split + header memo (parse_jws / _split)
        if not looks_like_jws(token):
            raise SystemExit("not a JWS")
        parts = token.split(".")
        if len(parts) != 3 or not parts[0] or "+" in token or "/" in token or "=" in token:
            raise SystemExit("malformed")
        header_b64, payload_b64, signature_b64 = parts
        header = _header(header_b64)
        t2 = clock()
        # 3. base64
        payload_raw = _b64decode(payload_b64)
        signature = _b64decode(signature_b64)
        t3 = clock()
        # 4. JSON with duplicate-member refusal
        payload = _json_object(payload_raw, "payload")
        t4 = clock()
        # 5. JWS object: the signing input and the UnverifiedJWS
        jws = UnverifiedJWS(
            header, payload, token[: len(header_b64) + len(payload_b64) + 1].encode("ascii"), signature, header_b64
        )
        t5 = clock()
        # 6. issuer route (Router.verify_at_hand)
        iss = peek_issuer(jws)
        runtime = at_hand.get(iss) if iss is not None else None
        if runtime is None:
            raise SystemExit("no issuer at hand")
        keys = runtime.keys_at_hand(jws, now)
        if keys is None:
            raise SystemExit("keys not at hand")
        t6 = clock()
        # 7. header checks (remembered per encoded header)
        alg, kid = runtime._checked_header(jws)
        t7 = clock()
        # 8. claim checks
        policy = runtime.policy
        exp, nbf, iat = check_claims(payload, policy, now)
        t8 = clock()
        # 9. signature
        thumbprint = check_signature(jws, keys, alg, kid)
        t9 = clock()
        # 10. claims object (verify_jws's last step) and the checks every kind of claims passes
        claims = verified_jwt_claims(payload, policy.scope_claims, exp, nbf, iat)
        router.admit(claims)
        t10 = clock()
        # 11. cache entry + store
        store.keep(key, jwt_entry(claims, runtime, thumbprint, now, None), now)
        t11 = clock()
        for i, (start, end) in enumerate(
            (
                (t0, t1),
                (t1, t2),
                (t2, t3),
                (t3, t4),
                (t4, t5),
                (t5, t6),
                (t6, t7),
                (t7, t8),
                (t8, t9),
                (t9, t10),
                (t10, t11),
            )
        ):
            totals[i] += end - start


def _clock_overhead() -> float:
    """ns of one ``perf_counter_ns()`` read as the stages pay it (the minimum of many)."""
    clock = time.perf_counter_ns
    best = float("inf")
    for _ in range(200):
        start = clock()
        for _ in range(100):
            clock()
        best = min(best, (clock() - start) / 101)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alg", choices=ALGORITHMS, default="RS256")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=2000, help="never-seen tokens per round")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 200 tokens (smoke test)")
    args = parser.parse_args()
    rounds, count = (2, 200) if args.quick else (args.rounds, args.tokens)
    alg = args.alg

    private, public = make_key(alg)
    per_round = [[mint(alg, private) for _ in range(count)] for _ in range(rounds)]
    warm = mint(alg, private)
    floor = floor_verifier(alg, public)

    def staged(tokens: list[str]) -> list[float]:
        guard = _guard(alg, public)
        guard.verify_sync(warm)  # keys parsed, header remembered, as in a running service
        totals = [0] * len(STAGES)
        _staged(guard, tokens, totals)
        return [ns / 1000 / len(tokens) for ns in totals]

    def pipeline(tokens: list[str]) -> float:
        guard = _guard(alg, public)
        guard.verify_sync(warm)
        start = time.perf_counter()
        for token in tokens:
            guard.verify_sync(token)
        return (time.perf_counter() - start) * 1e6 / len(tokens)

    def floor_run(tokens: list[str]) -> float:
        start = time.perf_counter()
        for token in tokens:
            floor(token)
        return (time.perf_counter() - start) * 1e6 / len(tokens)

    overhead_us = _clock_overhead() / 1000
    stage_samples: list[list[float]] = [[] for _ in STAGES]
    samples: dict[str, list[float]] = {"pipeline": [], "floor": [], "sum of stages": []}
    candidates: list[tuple[str, Callable[[list[str]], Any]]] = [
        ("stages", staged),
        ("pipeline", pipeline),
        ("floor", floor_run),
    ]
    for tokens in per_round:
        random.shuffle(candidates)
        for name, run in candidates:
            result = run(tokens)
            if name == "stages":
                stages = [max(0.0, value - overhead_us) for value in result]
                for i, value in enumerate(stages):
                    stage_samples[i].append(value)
                samples["sum of stages"].append(sum(stages))
            else:
                samples[name].append(result)

    def summary(values: list[float]) -> dict[str, float]:
        return {
            "median_us": round(statistics.median(values), 2),
            "min_us": round(min(values), 2),
            "max_us": round(max(values), 2),
        }

    table = {name: summary(values) for name, values in zip(STAGES, stage_samples, strict=True)}
    totals = {name: summary(values) for name, values in samples.items()}
    signature = table["signature"]["median_us"]
    pipeline_us = totals["pipeline"]["median_us"]
    floor_us = totals["floor"]["median_us"]
    print(f"{alg} new token, µs per token: median of {rounds} rounds of {count} never-seen tokens (min-max)")
    print(f"clock read subtracted from each stage: {overhead_us * 1000:.0f} ns")
    for name, row in table.items():
        print(f"  {name:<24} {row['median_us']:7.2f}  ({row['min_us']:.2f}-{row['max_us']:.2f})")
    for name, row in totals.items():
        print(f"  {name:<24} {row['median_us']:7.2f}  ({row['min_us']:.2f}-{row['max_us']:.2f})")
    python_work = pipeline_us - signature
    print(f"  pipeline / floor: {pipeline_us / floor_us:.2f}x; Python work around the signature: {python_work:.1f} µs")
    write_results(
        "stages",
        {
            "alg": alg,
            "rounds": rounds,
            "tokens_per_round": count,
            "clock_overhead_ns": round(overhead_us * 1000, 1),
            "stages": table,
            "totals": totals,
            "pipeline_over_floor": round(pipeline_us / floor_us, 3),
            "python_work_us": round(python_work, 2),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
