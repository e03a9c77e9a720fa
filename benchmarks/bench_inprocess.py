"""In-process benchmark: the middleware's own CPU cost per request, no server, no sockets.

The app is called directly (ASGI: ``await app(scope, receive, send)``; WSGI:
``app(environ, start_response)``), so what is measured is the Python work of
the stack alone, without uvicorn or gunicorn. Each case answers one small JSON
body; tokens are RS256:

* ``bare``: the app with no protection;
* ``cached``: tokenguard's middleware, one token repeated (cache hits);
* ``new``: tokenguard's middleware, every request a token never seen before;
* ``pyjwt``: a hand-written middleware that runs PyJWT's ``decode`` per request.

Stacks: Starlette + ``TokenGuardMiddleware``; plain WSGI (Werkzeug-free
callable) + ``TokenGuardWSGIMiddleware``; Flask + ``FlaskTokenGuard``.

CPU time (``time.process_time``) per request; the cases run in shuffled
round-robin rounds and the median and spread (min-max) of the rounds are
reported, with each case's ratio to ``bare``. Writes
``benchmarks/results/inprocess.json``.

    python benchmarks/bench_inprocess.py [--rounds 7] [--requests 3000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import write_results  # noqa: E402

from tokenguard import TokenGuard  # noqa: E402

ISS = "https://issuer.example.com/oidc"
AUD = "https://api.example.com"
BODY = b'{"ok":true}'


def _tokens(private: Any, count: int) -> list[str]:
    now = int(time.time())
    return [
        pyjwt.encode(
            {
                "iss": ISS,
                "aud": AUD,
                "sub": f"user-{i}",
                "scope": "read write",
                "iat": now,
                "exp": now + 3600,
                "jti": f"{i}-{random.random()}",
            },  # noqa: S311
            private,
            algorithm="RS256",
            headers={"kid": "k1"},
        )
        for i in range(count)
    ]


def _guard(public: Any) -> TokenGuard:
    jwk = json.loads(pyjwt.algorithms.RSAAlgorithm.to_jwk(public))
    jwk.update(kid="k1", alg="RS256", use="sig")
    return TokenGuard.from_keys(issuer=ISS, audience=AUD, jwks={"keys": [jwk]}, algorithms=["RS256"])


# ---------------------------------------------------------------------- ASGI


def _starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def hello(request: Any) -> Response:
        return Response(BODY, media_type="application/json")

    return Starlette(routes=[Route("/", hello)])


def _asgi_pyjwt(app: Any, public: Any) -> Any:
    async def naive(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            header = dict(scope["headers"]).get(b"authorization", b"").decode()
            try:
                pyjwt.decode(header[7:], public, algorithms=["RS256"], audience=AUD, issuer=ISS)
            except pyjwt.PyJWTError:
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
        await app(scope, receive, send)

    return naive


def _asgi_runner(app: Any, tokens: list[str]) -> Callable[[int], None]:
    loop = asyncio.new_event_loop()
    headers = [[(b"host", b"api.example.com"), (b"authorization", f"Bearer {t}".encode())] for t in tokens]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def many(count: int) -> None:
        n = len(headers)
        for i in range(count):
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "GET",
                "scheme": "http",
                "path": "/",
                "raw_path": b"/",
                "root_path": "",
                "query_string": b"",
                "headers": headers[i % n],
                "client": ("127.0.0.1", 5000),
                "server": ("127.0.0.1", 8000),
            }
            await app(scope, receive, send)

    def run(count: int) -> None:
        statuses.clear()
        loop.run_until_complete(many(count))
        if any(status != 200 for status in statuses):
            raise SystemExit(f"unexpected statuses: {sorted(set(statuses))}")

    return run


# ---------------------------------------------------------------------- WSGI


def _wsgi_bare(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]


def _wsgi_pyjwt(app: Any, public: Any) -> Any:
    def naive(environ: dict[str, Any], start_response: Any) -> Any:
        header = environ.get("HTTP_AUTHORIZATION", "")
        try:
            pyjwt.decode(header[7:], public, algorithms=["RS256"], audience=AUD, issuer=ISS)
        except pyjwt.PyJWTError:
            start_response("401 Unauthorized", [])
            return [b""]
        return app(environ, start_response)

    return naive


def _flask_app(mode: str, public: Any) -> Any:
    from flask import Flask, Response, abort, request

    app = Flask("bench")

    @app.get("/")
    def hello() -> Response:
        return Response(BODY, mimetype="application/json")

    if mode == "tokenguard":
        from tokenguard.flask import FlaskTokenGuard

        FlaskTokenGuard(app, _guard(public), protect_all=True)
    elif mode == "pyjwt":

        @app.before_request
        def naive() -> None:
            header = request.headers.get("Authorization", "")
            try:
                pyjwt.decode(header[7:], public, algorithms=["RS256"], audience=AUD, issuer=ISS)
            except pyjwt.PyJWTError:
                abort(401)

    return app


def _wsgi_runner(app: Any, tokens: list[str]) -> Callable[[int], None]:
    values = [f"Bearer {t}" for t in tokens]
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        statuses.append(status)
        return None

    def run(count: int) -> None:
        statuses.clear()
        n = len(values)
        for i in range(count):
            environ = {
                "REQUEST_METHOD": "GET",
                "SCRIPT_NAME": "",
                "PATH_INFO": "/",
                "QUERY_STRING": "",
                "SERVER_NAME": "127.0.0.1",
                "SERVER_PORT": "8000",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "HTTP_HOST": "api.example.com",
                "HTTP_AUTHORIZATION": values[i % n],
                "wsgi.version": (1, 0),
                "wsgi.url_scheme": "http",
                "wsgi.input": io.BytesIO(b""),
                "wsgi.errors": sys.stderr,
                "wsgi.multithread": False,
                "wsgi.multiprocess": False,
                "wsgi.run_once": False,
            }
            body = app(environ, start_response)
            for _ in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
        if any(not status.startswith("200") for status in statuses):
            raise SystemExit(f"unexpected statuses: {sorted(set(statuses))}")

    return run


# ---------------------------------------------------------------------- driver


def _cases(requests: int, rounds: int, public: Any, private: Any) -> dict[str, dict[str, Callable[[int], None]]]:
    from tokenguard.starlette import TokenGuardMiddleware
    from tokenguard.wsgi import TokenGuardWSGIMiddleware

    one = _tokens(private, 1)
    # Enough never-seen tokens for the warm-up and every round of the "new"
    # case (minted once, outside the timing; an RS256 signature costs ~1 ms).
    needed = rounds * requests + _warm_up(requests)
    fresh_asgi = iter(_tokens(private, needed))
    fresh_wsgi = iter(_tokens(private, needed))
    fresh_flask = iter(_tokens(private, needed))

    def new_tokens(source: Any, make: Callable[[list[str]], Callable[[int], None]]) -> Callable[[int], None]:
        def run(count: int) -> None:
            make([next(source) for _ in range(count)])(count)

        return run

    star = _starlette_app()
    asgi = {
        "bare": _asgi_runner(star, one),
        "cached": _asgi_runner(TokenGuardMiddleware(star, _guard(public)), one),
        "new": new_tokens(fresh_asgi, lambda ts: _asgi_runner(TokenGuardMiddleware(star, _guard(public)), ts)),
        "pyjwt": _asgi_runner(_asgi_pyjwt(star, public), one),
    }
    wsgi = {
        "bare": _wsgi_runner(_wsgi_bare, one),
        "cached": _wsgi_runner(TokenGuardWSGIMiddleware(_wsgi_bare, _guard(public)), one),
        "new": new_tokens(
            fresh_wsgi, lambda ts: _wsgi_runner(TokenGuardWSGIMiddleware(_wsgi_bare, _guard(public)), ts)
        ),
        "pyjwt": _wsgi_runner(_wsgi_pyjwt(_wsgi_bare, public), one),
    }
    flask = {
        "bare": _wsgi_runner(_flask_app("bare", public), one),
        "cached": _wsgi_runner(_flask_app("tokenguard", public), one),
        "new": new_tokens(fresh_flask, lambda ts: _wsgi_runner(_flask_app("tokenguard", public), ts)),
        "pyjwt": _wsgi_runner(_flask_app("pyjwt", public), one),
    }
    return {"starlette": asgi, "wsgi": wsgi, "flask": flask}


def _warm_up(requests: int) -> int:
    """Requests run once per case before timing: imports, first JWKS parse, code paths."""
    return min(requests, 200)


def _cpu_us_per_request(run: Callable[[int], None], count: int) -> float:
    start = time.process_time()
    run(count)
    return (time.process_time() - start) * 1e6 / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=3000, help="requests per case per round")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 300 requests (smoke test)")
    args = parser.parse_args()
    rounds, requests = (2, 300) if args.quick else (args.rounds, args.requests)

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = private.public_key()
    stacks = _cases(requests, rounds, public, private)
    samples: dict[str, dict[str, list[float]]] = {s: {c: [] for c in cases} for s, cases in stacks.items()}
    for stack, cases in stacks.items():
        for run in cases.values():
            run(_warm_up(requests))
        del stack
    order = [(stack, case) for stack, cases in stacks.items() for case in cases]
    for _ in range(rounds):
        random.shuffle(order)
        for stack, case in order:
            samples[stack][case].append(_cpu_us_per_request(stacks[stack][case], requests))

    result: dict[str, Any] = {"rounds": rounds, "requests": requests, "stacks": {}}
    for stack, cases in samples.items():
        bare = statistics.median(cases["bare"])
        print(f"\n{stack}: CPU µs per request, median of {rounds} rounds (min-max); ratio to bare")
        table: dict[str, Any] = {}
        for case, values in cases.items():
            median = statistics.median(values)
            table[case] = {
                "median_us": round(median, 2),
                "min_us": round(min(values), 2),
                "max_us": round(max(values), 2),
                "over_bare": round(median / bare, 3),
            }
            print(f"  {case:<7} {median:8.1f}  ({min(values):.1f}-{max(values):.1f})  {median / bare:5.2f}x")
        result["stacks"][stack] = table
    write_results("inprocess", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
