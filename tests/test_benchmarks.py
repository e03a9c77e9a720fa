"""The benchmark runs (a smoke test: no timing is asserted in the test suite)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# Each run starts servers and loads them for seconds; CI (scripts/test) runs them all,
# `pytest -m "not slow"` leaves them out while iterating.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def run_quick(script: str, results: str, timeout: int = 300) -> Any:
    """Run ``benchmarks/<script> --quick``, check it succeeded, return its JSON results."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads((ROOT / "benchmarks" / "results" / results).read_text())


def test_verify_benchmark_runs_and_writes_results() -> None:
    """bench_verify.py --quick completes and writes a result for every algorithm."""
    data = run_quick("bench_verify.py", "verify.json", timeout=300)
    assert set(data["verify_us"]) == {"RS256", "PS256", "ES256", "EdDSA", "HS256"}
    for row in data["verify_us"].values():
        assert {"tokenguard_cold", "tokenguard_cached", "floor_verify", "pyjwt"} <= set(row)
    assert data["bytes_per_cached_token"] > 0


def test_new_token_stages_benchmark_runs_every_stage() -> None:
    """bench_new_token_stages.py --quick times every stage, the whole path and the floor."""
    data = run_quick("bench_new_token_stages.py", "new_token_stages.json", timeout=300)
    stages = data["stages_us"]
    assert {"JSON with duplicate check", "claims object", "whole verify_sync (new tokens)", "floor"} <= set(stages)
    assert all(len(values) == data["rounds"] for values in data["samples_us"].values())


def test_workers_benchmark_runs_and_shows_sharing() -> None:
    """bench_workers.py --quick runs both modes against a real redis-server and a loopback issuer."""
    from .conftest import RedisServer

    RedisServer().start().kill()  # fails under CI, skips locally, when redis-server is missing
    data = run_quick("bench_workers.py", "workers.json", timeout=300)
    memory, shared = data["runs"]
    assert memory["failures"] == shared["failures"] == 0
    # With Redis each distinct opaque token is introspected at most once in all (alone: once per worker).
    assert 0 < shared["introspection_calls"] <= data["opaque_tokens"]
    assert memory["introspection_calls"] > shared["introspection_calls"]


def test_introspection_benchmark_runs_and_meets_its_invariants() -> None:
    """bench_introspection.py --quick: calls = distinct tokens cold, 0 warm, flood within the rate."""
    data = run_quick("bench_introspection.py", "introspection.json", timeout=300)
    assert data["cold"]["upstream_calls"] == data["distinct_tokens"]
    assert data["cold"]["outcomes"] == {"ok": data["requests"]}
    assert data["warm"]["upstream_calls"] == 0
    assert data["flood"]["upstream_calls"] <= data["flood"]["allowed_by_rate"]


def test_http_benchmark_runs_every_case() -> None:
    """bench_http.py --quick serves every case under uvicorn and gunicorn and loads it with wrk."""
    import shutil

    from .conftest import in_ci

    if shutil.which("wrk") is None:
        if in_ci():
            raise AssertionError("wrk is missing (scripts/test installs Debian's package)")
        pytest.skip("wrk is not installed")
    data = run_quick("bench_http.py", "http.json", timeout=600)
    cases = {(r["stack"], r["mode"], r["tokens"]) for r in data["runs"]}
    assert len(cases) == 8
    for row in data["runs"]:
        assert row["rps"] > 0
        assert row["non_2xx"] == 0, row  # every protected request carried a valid token


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_inprocess_benchmark_runs_every_case() -> None:
    """bench_inprocess.py --quick runs bare/cached/new/pyjwt on Starlette, WSGI and Flask (all answered 200)."""
    data = run_quick("bench_inprocess.py", "inprocess.json", timeout=600)
    assert set(data["stacks"]) == {"starlette", "wsgi", "flask"}
    for table in data["stacks"].values():
        assert set(table) == {"bare", "cached", "new", "pyjwt"}
        for row in table.values():
            assert 0 < row["min_us"] <= row["median_us"] <= row["max_us"]
        assert table["bare"]["over_bare"] == 1.0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_stages_benchmark_times_every_stage() -> None:
    """bench_stages.py --quick runs fresh RS256 tokens through every stage, the pipeline and the floor."""
    data = run_quick("bench_stages.py", "stages.json", timeout=300)
    assert data["alg"] == "RS256"
    assert list(data["stages"]) == [
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
    ]
    assert data["stages"]["signature"]["median_us"] > 0
    assert data["totals"]["pipeline"]["median_us"] > 0 and data["totals"]["floor"]["median_us"] > 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_inline_hit_benchmark_compares_both_hits() -> None:
    """bench_inline_hit.py --quick times the inlined hit and the hit made of calls, on the same token."""
    data = run_quick("bench_inline_hit.py", "inline_hit.json", timeout=300)
    assert set(data["hit"]) == {"RS256", "ES256", "HS256"}
    for row in data["hit"].values():
        assert row["inlined_us"] > 0 and row["called_us"] > 0
