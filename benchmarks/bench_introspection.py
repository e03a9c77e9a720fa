"""Introspection benchmark: coalescing, caching and flood protection against a loopback server.

Against a real loopback issuer (``tokenguard.testing.LocalIssuer``), with asyncio:

1. **cold**: 50 concurrent tasks verify ``--requests`` requests spread over K
   distinct opaque tokens, each token asked for by several tasks at once.
   Upstream calls must equal K: concurrent misses share one call.
2. **warm**: the same requests again: upstream calls must be 0.
3. **flood**: ``--flood`` requests with never-seen random tokens, 50 at a
   time, with ``IntrospectionLimits(rate=R, burst=R, max_concurrent=C)``.
   Upstream calls must stay within ``burst + rate * elapsed``; the rest are
   refused with 503 (``rate_limited`` / ``overloaded``).

Prints a table and writes ``benchmarks/results/introspection.json``.

    python benchmarks/bench_introspection.py [--tokens 200] [--requests 5000] [--flood 10000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import write_results  # noqa: E402

from tokenguard import IntrospectionLimits, InvalidToken, ServiceUnavailable, TokenGuard  # noqa: E402
from tokenguard.testing import LocalIssuer  # noqa: E402

CONCURRENCY = 50


async def drive(guard: TokenGuard, tokens: list[str]) -> Counter[str]:
    """Verify every token, ``CONCURRENCY`` at a time; count the outcomes."""
    outcomes: Counter[str] = Counter()
    queue = iter(tokens)

    async def task() -> None:
        for token in queue:
            try:
                await guard.verify(token)
                outcomes["ok"] += 1
            except ServiceUnavailable as exc:
                outcomes[exc.reason] += 1
            except InvalidToken:
                outcomes["invalid"] += 1

    await asyncio.gather(*(task() for _ in range(CONCURRENCY)))
    return outcomes


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with LocalIssuer(algorithms=("RS256",)) as issuer:
        tokens = [issuer.issue_opaque(scope="read", expires_in=3600) for _ in range(args.tokens)]
        # Every token asked for by several tasks at once: repeated in blocks of CONCURRENCY.
        rng = random.Random(7)
        requests = [tokens[i % args.tokens] for i in range(args.requests)]
        blocks = [requests[i : i + CONCURRENCY] for i in range(0, len(requests), CONCURRENCY)]
        rng.shuffle(blocks)
        workload = [token for block in blocks for token in block]

        guard = issuer.guard()
        await guard.verify(issuer.issue_opaque())  # discovery, outside the measured phases
        issuer.requests.clear()
        began = time.perf_counter()
        cold = await drive(guard, workload)
        cold_seconds = time.perf_counter() - began
        cold_calls = issuer.requests["/introspect"]
        issuer.requests.clear()
        began = time.perf_counter()
        warm = await drive(guard, workload)
        warm_seconds = time.perf_counter() - began
        warm_calls = issuer.requests["/introspect"]
        await guard.aclose()

        limits = IntrospectionLimits(rate=args.rate, burst=args.rate, max_concurrent=args.cap, max_wait=0.05)
        flood_guard = issuer.guard(introspection_limits=limits)
        await flood_guard.verify(issuer.issue_opaque())
        issuer.requests.clear()
        garbage = [secrets.token_urlsafe(32) for _ in range(args.flood)]
        began = time.perf_counter()
        flood = await drive(flood_guard, garbage)
        flood_seconds = time.perf_counter() - began
        flood_calls = issuer.requests["/introspect"]
        await flood_guard.aclose()
    allowed = args.rate + args.rate * flood_seconds
    return {
        "concurrency": CONCURRENCY,
        "distinct_tokens": args.tokens,
        "requests": args.requests,
        "cold": {"upstream_calls": cold_calls, "outcomes": dict(cold), "seconds": round(cold_seconds, 3)},
        "warm": {"upstream_calls": warm_calls, "outcomes": dict(warm), "seconds": round(warm_seconds, 3)},
        "flood": {
            "requests": args.flood,
            "rate": args.rate,
            "cap": args.cap,
            "upstream_calls": flood_calls,
            "allowed_by_rate": int(allowed),
            "outcomes": dict(flood),
            "seconds": round(flood_seconds, 3),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--flood", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=100.0, help="introspection calls per second in the flood")
    parser.add_argument("--cap", type=int, default=16, help="introspection calls in flight in the flood")
    parser.add_argument("--quick", action="store_true", help="a short run (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.tokens, args.requests, args.flood = 20, 300, 500
    result = asyncio.run(main_async(args))
    cold, warm, flood = result["cold"], result["warm"], result["flood"]
    print(f"{CONCURRENCY}-way concurrency, {args.requests} requests over {args.tokens} distinct opaque tokens")
    print(f"  cold: {cold['upstream_calls']} upstream calls (distinct tokens: {args.tokens}) in {cold['seconds']} s")
    print(f"  warm: {warm['upstream_calls']} upstream calls in {warm['seconds']} s")
    print(
        f"flood of {flood['requests']} random tokens (rate {args.rate}/s, cap {args.cap}): "
        f"{flood['upstream_calls']} upstream calls (rate allows {flood['allowed_by_rate']}) "
        f"in {flood['seconds']} s; outcomes {flood['outcomes']}"
    )
    write_results("introspection", result)


if __name__ == "__main__":
    main()
