"""Instructions per request of bench_inprocess.py's bare and cached cases, counted by valgrind.

Timings on a shared machine move by tens of percent; instruction counts do
not. For each stack (Starlette, plain WSGI, Flask) and case (``bare``,
``cached``), the same app as ``bench_inprocess.py`` serves N requests after a
warm-up, under ``valgrind --tool=callgrind``, for N = 500 and N = 2,000; the
difference divided by 1,500 is the count per request (start-up, imports and
warm-up cancel out). The RSA key is kept in ``benchmarks/results/`` so both
runs do the same start-up work.

Under valgrind SHA-256 runs without the CPU's SHA extensions, so the cached
verification's keyed HMAC weighs far more there than in real time: compare
the middleware's overhead between versions, not with wall-clock shares.
To count another copy of tokenguard, put it first on ``PYTHONPATH``.

    python benchmarks/count_instructions.py [--stacks starlette,wsgi,flask]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import RESULTS, write_results  # noqa: E402

KEY = RESULTS / "count-instructions-key.pem"
CASES = ("bare", "cached")


def _key() -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if not KEY.exists():
        RESULTS.mkdir(exist_ok=True)
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        KEY.write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return serialization.load_pem_private_key(KEY.read_bytes(), None)


def _child(stack: str, case: str, count: int) -> None:
    """Serve ``count`` requests (after 200 of warm-up) with one stack and case; no timing."""
    import jwt as pyjwt
    from bench_inprocess import AUD, ISS, _asgi_runner, _flask_app, _guard, _starlette_app, _wsgi_bare, _wsgi_runner

    private = _key()
    public = private.public_key()
    # Fixed claims: the same token in both runs.
    token = pyjwt.encode(
        {"iss": ISS, "aud": AUD, "sub": "user-1", "scope": "read write", "iat": 1700000000, "exp": 4000000000},
        private,
        algorithm="RS256",
        headers={"kid": "k1"},
    )
    if stack == "starlette":
        from tokenguard.starlette import TokenGuardMiddleware

        app = _starlette_app()
        run = _asgi_runner(app if case == "bare" else TokenGuardMiddleware(app, _guard(public)), [token])
    elif stack == "wsgi":
        from tokenguard.wsgi import TokenGuardWSGIMiddleware

        wsgi = _wsgi_bare if case == "bare" else TokenGuardWSGIMiddleware(_wsgi_bare, _guard(public))
        run = _wsgi_runner(wsgi, [token])
    else:
        run = _wsgi_runner(_flask_app("bare" if case == "bare" else "tokenguard", public), [token])
    run(200)
    if count:
        run(count)


def _instructions(stack: str, case: str, count: int) -> int:
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--child",
            stack,
            case,
            str(count),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", result.stderr)
    if found is None:
        raise SystemExit(f"no instruction count from valgrind: {result.stderr[-500:]}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", default="starlette,wsgi,flask")
    parser.add_argument("--child", nargs=3, metavar=("STACK", "CASE", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        stack, case, count = args.child
        _child(stack, case, int(count))
        return 0
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    _key()
    table: dict[str, dict[str, int]] = {}
    for stack in args.stacks.split(","):
        table[stack] = {}
        for case in CASES:
            low, high = _instructions(stack, case, 500), _instructions(stack, case, 2000)
            table[stack][case] = (high - low) // 1500
        bare, cached = table[stack]["bare"], table[stack]["cached"]
        print(f"{stack:<10} bare {bare:>9,}  cached {cached:>9,}  overhead {cached - bare:>9,} instructions/request")
    write_results("instructions", {"instructions_per_request": table})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
