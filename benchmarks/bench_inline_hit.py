"""Is the inlined cache hit worth its second copy? The same guard's hit, inlined and through calls.

``TokenGuard.verify`` and ``verify_sync`` each spell out the cache hit (keyed
HMAC from precomputed states, one dict read, :func:`tokenguard.results.serves`
written inline); ``tests/test_results.py`` pins both copies to ``serves()``.
This script measures what the copies buy: the current ``verify_sync`` against
a subclass whose hit makes the calls instead (``TokenHasher.cache_key``, then
a function that returns the served claims via ``serves()``), everything else
equal. Repeated token, CPU time of this process, the two alternated in every
round, median of the rounds per algorithm.

    python benchmarks/bench_inline_hit.py [--rounds 21] [--calls 200000] [--quick]

Writes ``benchmarks/results/inline_hit.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import write_results  # noqa: E402
from bench_verify import AUD, ISS, make_key, mint  # noqa: E402

from tokenguard import TokenClaims, TokenGuard  # noqa: E402
from tokenguard.cache import CachedResult  # noqa: E402
from tokenguard.results import serves  # noqa: E402


def served_claims(entry: CachedResult, now: float) -> TokenClaims | None:
    """The entry's claims when ``serves()`` says it may answer now."""
    claims = entry.claims
    return claims if claims is not None and serves(entry, now) else None


class CalledHit(TokenGuard):
    """The guard with its cache hit made of calls; only the hit is measured (a miss is an error here)."""

    def verify_sync(self, token: str, *, client: str | None = None) -> TokenClaims:
        now = self.clock()
        if len(token) <= self.max_token_bytes:
            entry = self._cache_get(self._hasher.cache_key(token))
            if entry is not None:
                hit = served_claims(entry, now)
                if hit is not None:
                    self._hits += 1
                    return self._direct(token, hit) if self._direct_check else hit
        raise AssertionError("the benchmark's token was not cached")


def build(cls: type[TokenGuard], alg: str, public: Any) -> TokenGuard:
    if alg == "HS256":
        return cls.from_keys(issuer=ISS, audience=AUD, hmac_keys={"k1": public}, algorithms=["HS256"])
    return cls.from_keys(issuer=ISS, audience=AUD, keys=[public], algorithms=[alg])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--calls", type=int, default=200_000, help="calls per timing")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 2,000 calls (smoke test)")
    args = parser.parse_args()
    rounds, calls = (3, 2000) if args.quick else (args.rounds, args.calls)
    table: dict[str, dict[str, float]] = {}
    for alg in ("RS256", "ES256", "HS256"):
        private, public = make_key(alg)
        token = mint(alg, private)
        guards = {"inlined": build(TokenGuard, alg, public), "called": build(CalledHit, alg, public)}
        for guard in guards.values():
            TokenGuard.verify_sync(guard, token)  # verified once, cached
        samples: dict[str, list[float]] = {name: [] for name in guards}
        for _ in range(rounds):
            for name, guard in guards.items():
                verify = guard.verify_sync
                start = time.process_time()
                for _ in range(calls):
                    verify(token)
                samples[name].append((time.process_time() - start) / calls * 1e6)
        inlined, called = statistics.median(samples["inlined"]), statistics.median(samples["called"])
        table[alg] = {
            "inlined_us": round(inlined, 3),
            "called_us": round(called, 3),
            "inlined_min_us": round(min(samples["inlined"]), 3),
            "called_min_us": round(min(samples["called"]), 3),
            "called_over_inlined": round(called / inlined, 3),
        }
        print(
            f"{alg}: inlined {inlined:.3f} µs, called {called:.3f} µs"
            f" (minimums {min(samples['inlined']):.3f} / {min(samples['called']):.3f}): x{called / inlined:.3f}"
        )
    write_results("inline_hit", {"rounds": rounds, "calls": calls, "timer": "process_time", "hit": table})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
