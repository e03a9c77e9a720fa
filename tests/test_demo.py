"""The demo serves until Ctrl-C while its curl lines work, and prints none when it exits."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def test_serve_prints_working_curl_lines_until_interrupted() -> None:
    """``--serve``: the printed curl lines reach a live API (200 with the token, 401 without); Ctrl-C ends it."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("serving; Ctrl-C to stop"):
                break
        output = "".join(lines)
        assert "Try it yourself (both servers run until Ctrl-C):" in output
        with_token = re.search(r"curl -i -H 'Authorization: Bearer (\S+)' (http://\S+/books)", output)
        assert with_token is not None, output
        token, url = with_token.groups()
        assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert httpx.get(url).status_code == 401
        assert "ok   introspection" in output  # the readiness report
        # The lines keep working while the demo serves: its tokens outlive the 5-minute walkthrough ones.
        claims = json.loads(
            subprocess.run(
                [sys.executable, "-m", "tokenguard", "inspect", "--json", token],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )["claims"]
        assert claims["exp"] - claims["iat"] >= 3600
        # The printed inspect line runs as typed from the project directory (.venv/bin is not on PATH).
        inspect = re.search(r"^  (\S+) inspect (\S+)$", output, re.MULTILINE)
        assert inspect is not None, output
        command = inspect.group(1)
        assert command == "tokenguard" or (ROOT / command).exists() or Path(command).exists(), command
        ran = subprocess.run(
            [str(ROOT / command) if (ROOT / command).exists() else command, "inspect", inspect.group(2)],
            capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip
        assert ran.returncode == 0 and "claims (not verified):" in ran.stdout, ran.stderr
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(url)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_without_serve_no_curl_lines() -> None:
    """Without ``--serve`` the servers stop, so no curl line is printed."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "curl -i" not in result.stdout
    assert "servers stopped" in result.stdout
    assert "log WARNING: token of issuer" in result.stdout  # the wrong-audience case, explained
