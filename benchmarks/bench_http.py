"""HTTP benchmark: a trivial JSON endpoint, bare and protected, under real servers and wrk.

For each stack (Starlette under uvicorn; Flask under gunicorn, one sync
worker each) the same endpoint is served:

* ``bare``: no protection;
* ``tokenguard``, repeated tokens: wrk sends one valid RS256 token (cache hits);
* ``tokenguard``, all-new tokens: every request carries a token never seen before;
* ``naive``: PyJWT ``decode`` on every request (a hand-written middleware).

wrk (Debian's package) loads each from its own process on loopback. Reported:
req/s, p50/p99 latency, and the per-request overhead against ``bare`` in µs
(``1e6/rps - 1e6/rps_bare``), set beside the RS256 signature floor
(``cryptography``'s ``verify()`` alone). Writes ``benchmarks/results/http.json``.

    python benchmarks/bench_http.py [--seconds 10] [--connections 16] [--quick]

Needs ``wrk`` (``apt-get install wrk``), uvicorn and gunicorn (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import free_port, write_results  # noqa: E402

ISS = "https://issuer.example.com/oidc"
AUD = "https://api.example.com"

LUA_FIXED = 'wrk.headers["Authorization"] = "Bearer {token}"\n'
LUA_ROTATING = """
local tokens = {{}}
for line in io.lines("{path}") do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i + 1
  if i > #tokens then i = 1 end
  return wrk.format(nil, nil, {{ ["Authorization"] = "Bearer " .. tokens[i] }})
end
"""


def _mint(args: tuple[bytes, int, int]) -> list[str]:
    pem, start, count = args
    key = serialization.load_pem_private_key(pem, password=None)
    now = int(time.time())
    return [
        pyjwt.encode(
            {
                "iss": ISS,
                "sub": f"user-{start + i}",
                "aud": AUD,
                "exp": now + 3600,
                "iat": now,
                "scope": "openid profile email library-api-checked-books",
                "client_id": "s6BhdRkqt3-web-frontend-application",
                "jti": os.urandom(16).hex(),
            },
            key,
            algorithm="RS256",
            headers={"kid": "k1", "typ": "at+jwt"},
        )
        for i in range(count)
    ]


def mint_tokens(private_pem: bytes, count: int) -> list[str]:
    """RS256 signing is slow (~1 ms): spread it over the cores."""
    workers = os.cpu_count() or 1
    share = -(-count // workers)
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        parts = pool.map(_mint, [(private_pem, i * share, share) for i in range(workers)])
    return [token for part in parts for token in part][:count]


def floor_us(public: Any, token: str) -> float:
    import base64

    head, body, sig = token.split(".")
    signature = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    message = f"{head}.{body}".encode()

    def verify() -> None:
        public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())

    return min(timeit.repeat(verify, number=2000, repeat=5)) / 2000 * 1e6


def serve(stack: str, mode: str, key_path: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BENCH_MODE": mode, "BENCH_KEY": key_path, "PYTHONPATH": str(ROOT)}
    if stack == "uvicorn":
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "benchmarks.http_apps:asgi_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
    else:
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "benchmarks.http_apps:wsgi_app()",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--log-level",
            "warning",
        ]
    process = subprocess.Popen(command, env=env, cwd=ROOT)
    # Ready means answering HTTP, not accepting connections: gunicorn's master
    # listens before its worker has imported the app, and a short wrk run
    # started then would count the worker's start-up as the benchmark.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                if sock.recv(16).startswith(b"HTTP/"):
                    return process
        except OSError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{stack} did not start")


def parse_wrk(output: str) -> dict[str, float]:
    def latency(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if match is None:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value * {"us": 1, "ms": 1000, "s": 1e6}[unit]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return {
        "rps": float(rps.group(1)) if rps else float("nan"),
        "p50_us": latency("50"),
        "p99_us": latency("99"),
        "non_2xx": float(non_2xx.group(1)) if non_2xx else 0.0,
    }


def load(port: int, script: str, args: argparse.Namespace) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        command = [
            "wrk",
            "-t1",
            f"-c{args.connections}",
            f"-d{args.seconds}s",
            "--latency",
            "-s",
            handle.name,
            f"http://127.0.0.1:{port}/",
        ]
        output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=args.seconds + 60).stdout
    finally:
        os.unlink(handle.name)
    return parse_wrk(output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=60_000, help="tokens minted for the all-new runs")
    parser.add_argument("--stacks", default="uvicorn,gunicorn")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every case, round-robin; the median is kept")
    parser.add_argument("--quick", action="store_true", help="a short run (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.new_tokens, args.rounds = 1, 1000, 1
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    tokens = mint_tokens(private_pem, args.new_tokens + 1)
    floor = floor_us(private.public_key(), tokens[0])
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        key_path = str(Path(tmp) / "public.pem")
        Path(key_path).write_bytes(public_pem)
        tokens_path = str(Path(tmp) / "tokens.txt")
        Path(tokens_path).write_text("\n".join(tokens[1:]) + "\n")
        fixed = LUA_FIXED.format(token=tokens[0])
        rotating = LUA_ROTATING.format(path=tokens_path)
        cases = [
            ("bare", "bare", fixed),
            ("tokenguard", "repeated", fixed),
            ("tokenguard", "all-new", rotating),
            ("naive", "repeated", fixed),
        ]
        # Round-robin: each round runs every case once, so a slow spell of a
        # shared machine hits all cases alike; per case, the run with the
        # median req/s is reported.
        runs: dict[tuple[str, str, str], list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for stack in args.stacks.split(","):
                for mode, tokens_kind, script in cases:
                    port = free_port()
                    server = serve(stack, mode, key_path, port)
                    try:
                        result = load(port, script, args)
                    finally:
                        server.send_signal(signal.SIGTERM)
                        server.wait(timeout=30)
                    runs.setdefault((stack, mode, tokens_kind), []).append(result)
        for (stack, mode, tokens_kind), results in runs.items():
            median = sorted(results, key=lambda r: r["rps"])[len(results) // 2]
            rps_runs = [round(r["rps"]) for r in results]
            rows.append({"stack": stack, "mode": mode, "tokens": tokens_kind, **median, "rps_runs": rps_runs})
    for row in rows:
        bare = next(r for r in rows if r["stack"] == row["stack"] and r["mode"] == "bare")
        if not (row["rps"] > 0 and bare["rps"] > 0):
            # A run that completed no request (an overloaded machine, a server
            # that failed) has no overhead to report; say so instead of dividing by 0.
            row["overhead_us"] = row["rps_vs_bare"] = float("nan")
            row["overhead_vs_floor"] = float("nan")
            continue
        row["overhead_us"] = round(1e6 / row["rps"] - 1e6 / bare["rps"], 1)
        row["rps_vs_bare"] = round(row["rps"] / bare["rps"], 3)
        row["overhead_vs_floor"] = round(row["overhead_us"] / floor, 2)
    print(
        f"RS256 signature floor: {floor:.1f} us; wrk -t1 -c{args.connections} -d{args.seconds}s;"
        f" median of {args.rounds} round-robin rounds"
    )
    print(
        f"{'stack':<10}{'mode':<12}{'tokens':<10}{'req/s':>9}{'vs bare':>9}{'p50 us':>9}{'p99 us':>9}"
        f"{'overhead us':>13}{'/floor':>8}{'non-2xx':>9}"
    )
    for r in rows:
        print(
            f"{r['stack']:<10}{r['mode']:<12}{r['tokens']:<10}{r['rps']:>9.0f}{r['rps_vs_bare']:>9.3f}"
            f"{r['p50_us']:>9.0f}{r['p99_us']:>9.0f}{r['overhead_us']:>13.1f}{r['overhead_vs_floor']:>8.2f}"
            f"{r['non_2xx']:>9.0f}"
        )
    write_results(
        "http",
        {
            "floor_rs256_us": round(floor, 2),
            "wrk": {"threads": 1, "connections": args.connections, "seconds": args.seconds},
            "rounds": args.rounds,
            "runs": rows,
        },
    )


if __name__ == "__main__":
    main()
