"""Scale-out benchmark: N worker processes against one provider, with and without Redis.

A real loopback issuer (``tokenguard.testing.LocalIssuer``) mints K opaque
tokens and J JWTs. N worker processes (each its own guard, as gunicorn or
uvicorn workers would have) verify R requests each, drawing tokens at random
from the same pool, all starting together. The run is done twice:

* ``memory``: each worker has only its in-process cache;
* ``shared``: each worker also has ``cache=RedisCache(<a real redis-server>)``.

Reported: upstream calls (introspection, JWKS, discovery) per 1,000 requests,
and the wall time. Prints a table and writes ``benchmarks/results/workers.json``.

    python benchmarks/bench_workers.py [--workers 4] [--requests 5000] [--tokens 500] [--quick]

Needs ``redis-server`` on the PATH (``scripts/test`` installs Debian's).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import free_port, write_results  # noqa: E402

from tokenguard import TokenGuard  # noqa: E402
from tokenguard.redis_cache import RedisCache  # noqa: E402
from tokenguard.testing import LocalIssuer  # noqa: E402

AUDIENCE = "https://api.test"


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (scripts/test installs Debian's package)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    process.kill()
    sys.exit("redis-server did not start")


def work(job: dict[str, Any], start: Any, out: Any) -> None:
    """One worker process: build a guard, wait for the start signal, verify R requests."""
    cache = RedisCache(job["redis"]) if job["redis"] else None
    guard = TokenGuard.from_issuer(
        job["issuer"],
        audience=AUDIENCE,
        client_id=job["client_id"],
        client_secret=job["client_secret"],
        cache=cache,
        hash_key=bytes.fromhex(job["hash_key"]),  # the same in every worker, as a deployment would set it
    )
    rng = random.Random(job["seed"])
    tokens = job["tokens"]
    start.wait()
    failures = 0
    for _ in range(job["requests"]):
        try:
            guard.verify_sync(rng.choice(tokens))
        except Exception:  # noqa: BLE001 - counted, reported
            failures += 1
    out.put({"failures": failures, "stats": guard.stats})
    guard.close()


def run(
    mode: str, issuer: LocalIssuer, tokens: list[str], args: argparse.Namespace, redis_url: str | None
) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    issuer.requests.clear()
    hash_key = os.urandom(32).hex()
    start = context.Event()
    out = context.Queue()
    jobs = [
        {
            "issuer": issuer.issuer,
            "client_id": issuer.client_id,
            "client_secret": issuer.client_secret,
            "redis": redis_url,
            "tokens": tokens,
            "requests": args.requests,
            "seed": seed,
            "hash_key": hash_key,
        }
        for seed in range(args.workers)
    ]
    processes = [context.Process(target=work, args=(job, start, out)) for job in jobs]
    for process in processes:
        process.start()
    time.sleep(1.0)  # let every worker import and build its guard
    began = time.perf_counter()
    start.set()
    reports = [out.get(timeout=600) for _ in processes]
    elapsed = time.perf_counter() - began
    for process in processes:
        process.join()
    total = args.workers * args.requests
    introspection = issuer.requests["/introspect"]
    jwks = issuer.requests["/jwks"]
    discovery = sum(n for path, n in issuer.requests.items() if "well-known" in path)
    upstream = introspection + jwks + discovery
    return {
        "mode": mode,
        "requests": total,
        "failures": sum(r["failures"] for r in reports),
        "introspection_calls": introspection,
        "jwks_calls": jwks,
        "discovery_calls": discovery,
        "upstream_per_1000": round(1000 * upstream / total, 2),
        "introspection_per_1000": round(1000 * introspection / total, 2),
        "seconds": round(elapsed, 2),
        "shared_cache_hits": sum(r["stats"].get("shared_cache_hit", 0) for r in reports),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--requests", type=int, default=5000, help="requests per worker")
    parser.add_argument("--tokens", type=int, default=500, help="distinct opaque tokens")
    parser.add_argument("--jwts", type=int, default=100, help="distinct JWTs")
    parser.add_argument("--quick", action="store_true", help="a short run (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.workers, args.requests, args.tokens, args.jwts = 2, 200, 40, 10
    redis_process, redis_url = start_redis()
    try:
        with LocalIssuer(algorithms=("RS256",)) as issuer:
            issuer.token_lifetime = 3600
            tokens = [issuer.issue_opaque(scope="read", expires_in=3600) for _ in range(args.tokens)]
            tokens += [issuer.issue(scope="read", expires_in=3600) for _ in range(args.jwts)]
            rows = [run("memory", issuer, tokens, args, None), run("shared", issuer, tokens, args, redis_url)]
    finally:
        redis_process.kill()
    print(f"{args.workers} workers x {args.requests} requests over {args.tokens} opaque tokens + {args.jwts} JWTs")
    print(f"{'cache':<8}{'introspect':>12}{'jwks':>6}{'disco':>7}{'upstream/1000':>15}{'failures':>10}{'seconds':>9}")
    for row in rows:
        print(
            f"{row['mode']:<8}{row['introspection_calls']:>12}{row['jwks_calls']:>6}{row['discovery_calls']:>7}"
            f"{row['upstream_per_1000']:>15}{row['failures']:>10}{row['seconds']:>9}"
        )
    write_results(
        "workers",
        {
            "workers": args.workers,
            "requests_per_worker": args.requests,
            "opaque_tokens": args.tokens,
            "jwts": args.jwts,
            "runs": rows,
        },
    )


if __name__ == "__main__":
    main()
