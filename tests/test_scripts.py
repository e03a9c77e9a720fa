"""scripts/test's own logic: the parts that decide whether a build fails."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _fuzz_function() -> str:
    text = (ROOT / "scripts" / "test").read_text()
    match = re.search(r"^fuzz\(\) \{\n.*?^\}\n", text, re.MULTILINE | re.DOTALL)
    assert match, "scripts/test defines fuzz()"
    return match.group(0)


@pytest.mark.parametrize(
    ("output", "exit_code", "fails"),
    [
        ("=== Uncaught Python exception: ===\nTraceback (most recent call last):", 1, True),
        ("==12== ERROR: libFuzzer: deadly signal", 77, True),
        ("nothing the filter keeps", 3, True),
        ("Done 1000 runs in 1 second(s)", 0, False),
        ("nothing the filter keeps", 0, False),
    ],
)
def test_a_fuzz_crash_fails_the_build(tmp_path: Path, output: str, exit_code: int, fails: bool) -> None:
    """fuzz() runs under set -euo pipefail: a fuzzer exiting non-zero must stop the script, whatever it printed
    (with pipefail, `... | grep || true` ran `true` and PIPESTATUS then held only its 0)."""
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / "fuzz").mkdir()
    python = tmp_path / ".venv" / "bin" / "python"
    python.write_text(f"#!/bin/sh\nprintf '%s\\n' {output!r}\nexit {exit_code}\n")
    python.chmod(0o755)
    script = f"set -euo pipefail\n{_fuzz_function()}fuzz target.py 1\necho finished\n"
    run = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert (run.returncode != 0) is fails, run
    assert ("finished" in run.stdout) is not fails
