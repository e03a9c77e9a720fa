"""The ``tokenguard`` command against the loopback issuer: main() in process, and the installed entry point."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenguard import InvalidToken, TokenGuard
from tokenguard.cli import inspect_token, main, relative
from tokenguard.testing import LocalIssuer

pytestmark = pytest.mark.integration

ENTRY_POINT = Path(sys.executable).parent / "tokenguard"
AUDIENCE = "https://api.test"


def tokenguard(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the command in this process: ``main()`` with its output, errors and environment captured.

    The installed console script and ``python -m tokenguard`` are run as real
    processes by the tests named after them; the rest call the same ``main()``
    the script calls, without paying for a new interpreter each time.
    """
    out, err = io.StringIO(), io.StringIO()
    # Only the variables given change, and each comes back as it was: clearing
    # the whole environment, even for an instant, would pull it from under any
    # thread of this worker that reads one (httpx reads proxy settings).
    saved = {name: os.environ.get(name) for name in env or {}}
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):  # argparse prints --help itself
            try:
                code = main(list(args), out=out, stdin=io.StringIO(stdin or ""))
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 2
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def installed(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed console script as a process."""
    assert ENTRY_POINT.exists(), "pip install -e . installs the tokenguard console script"
    return subprocess.run([str(ENTRY_POINT), *args], input=stdin, capture_output=True, text=True, timeout=60)


def test_installed_console_script(shared_issuer: LocalIssuer) -> None:
    """The console script pip installs runs main(): a valid token verifies, exit 0, JSON on stdout."""
    token = shared_issuer.issue(scope="read", audience=AUDIENCE)
    result = installed("verify", "--issuer", shared_issuer.issuer, "--audience", AUDIENCE, "--json", "-", stdin=token)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["valid"] is True
    refused = installed("inspect", "not-a-jwt-at-all")
    assert refused.returncode == 1
    assert "not a JWT" in refused.stdout


def test_main_leaves_logging_as_it_found_it() -> None:
    """main() may run inside another program: the package logger's handlers, level and propagation come back."""
    logger = logging.getLogger("tokenguard")
    before = (list(logger.handlers), logger.level, logger.propagate)
    for args in (("inspect", "x.y"), ("-v", "inspect", "x.y")):
        tokenguard(*args)
        assert (list(logger.handlers), logger.level, logger.propagate) == before


def test_inspect_shows_claims_and_what_looks_wrong(shared_issuer: LocalIssuer) -> None:
    """An expired ``typ: JWT`` token without ``kid``: every problem is listed, times are relative."""
    claims = shared_issuer.claims(expires_in=-125)
    token = pyjwt.encode(claims, shared_issuer.key("RS256").private, algorithm="RS256", headers={"typ": "JWT"})
    result = tokenguard("inspect", token)
    assert result.returncode == 0, result.stderr
    assert "claims (not verified):" in result.stdout
    assert "ago)" in result.stdout
    assert "expired 2m" in result.stdout
    assert "typ JWT: not at+jwt" in result.stdout
    assert "no kid header" in result.stdout


def test_inspect_json_from_stdin(shared_issuer: LocalIssuer) -> None:
    """``-`` reads the token from stdin (kept out of ps and shell history); ``--json`` is machine-readable."""
    token = shared_issuer.issue(scope="read", audience=[AUDIENCE, "https://other"])
    result = tokenguard("inspect", "--json", "-", stdin=token + "\n")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["header"]["typ"] == "at+jwt"
    assert data["claims"]["scope"] == "read"
    assert data["times"]["exp"]["relative"].startswith("in ")
    assert data["problems"] == []


def test_inspect_opaque_token() -> None:
    """An opaque token is not a JWT: exit 1 and say only introspection can tell."""
    result = tokenguard("inspect", "not-a-jwt-at-all")
    assert result.returncode == 1
    assert "not a JWT" in result.stdout


def test_python_dash_m() -> None:
    """``python -m tokenguard`` is the same command."""
    result = subprocess.run(
        [sys.executable, "-m", "tokenguard", "inspect", "--json", "x.y"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"] == "malformed token"


def test_verify_valid_token(shared_issuer: LocalIssuer) -> None:
    """A good token: exit 0 with subject, scopes and expiry."""
    token = shared_issuer.issue(scope="read write", audience=AUDIENCE)
    result = tokenguard("verify", "--issuer", shared_issuer.issuer, "--audience", AUDIENCE, "--json", token)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    assert data["valid"] is True and data["scopes"] == ["read", "write"] and data["subject"] == "user-1"


def test_verify_lists_every_failed_check_in_the_401_words(shared_issuer: LocalIssuer) -> None:
    """Wrong audience *and* expired: both listed, each in the words the 401 would use; exit 1."""
    token = shared_issuer.issue(audience="https://another.api", expires_in=-3600)
    result = tokenguard("verify", "--issuer", shared_issuer.issuer, "--audience", AUDIENCE, "--json", token)
    assert result.returncode == 1
    data = json.loads(result.stdout)
    checks = [f["check"] for f in data["failures"]]
    assert checks == ["wrong audience", "token expired"]
    assert "https://another.api" in data["failures"][0]["detail"]
    with TokenGuard.from_issuer(shared_issuer.issuer, audience=AUDIENCE) as guard:
        with pytest.raises(InvalidToken) as caught:
            guard.verify_sync(token)
    assert caught.value.description == data["error"] == "wrong audience"
    for words in checks:  # each phrase is one the guard itself answers with
        with TokenGuard.from_issuer(
            shared_issuer.issuer, audience=None if words != "wrong audience" else AUDIENCE
        ) as g:
            lone = shared_issuer.issue(
                audience="https://another.api" if words == "wrong audience" else AUDIENCE,
                expires_in=-3600 if words == "token expired" else 300,
            )
            with pytest.raises(InvalidToken, match=words):
                g.verify_sync(lone)


def test_verify_unknown_key_and_scope(shared_issuer: LocalIssuer) -> None:
    """A missing scope is a 403 (exit 1); a forged signature is named."""
    token = shared_issuer.issue(scope="read", audience=AUDIENCE)
    result = tokenguard("verify", "--issuer", shared_issuer.issuer, "--audience", AUDIENCE, "--scope", "admin", token)
    assert result.returncode == 1
    assert "403 insufficient_scope" in result.stdout
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    result = tokenguard("verify", "--issuer", shared_issuer.issuer, "--audience", AUDIENCE, forged)
    assert result.returncode == 1
    assert "signature verification failed" in result.stdout


def test_verify_opaque_with_secret_from_environment(shared_issuer: LocalIssuer) -> None:
    """Introspection credentials: the secret comes from an environment variable and is never printed."""
    token = shared_issuer.issue_opaque(scope="read", audience=AUDIENCE)
    args = ["verify", "--issuer", shared_issuer.issuer, "--audience", AUDIENCE, "--client-id", shared_issuer.client_id]
    # "--": an opaque token is random base64url and may begin with "-" (one in 64 does).
    ok = tokenguard(
        *args, "--client-secret-env", "RS_SECRET", "--", token, env={"RS_SECRET": shared_issuer.client_secret}
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "type:     opaque" in ok.stdout
    assert shared_issuer.client_secret not in ok.stdout + ok.stderr
    wrong = tokenguard(*args, "--client-secret-env", "RS_SECRET", "--", token, env={"RS_SECRET": "nope-not-it"})
    assert wrong.returncode == 2
    assert "refused this API's client credentials (HTTP 401)" in wrong.stdout
    assert "nope-not-it" not in wrong.stdout + wrong.stderr
    unset = tokenguard(*args, "--client-secret-env", "TOKENGUARD_TEST_UNSET_VAR", "--", token)
    assert unset.returncode == 2
    assert "TOKENGUARD_TEST_UNSET_VAR is not set" in unset.stderr
    secret_on_command_line = tokenguard(*args, "--client-secret", "x", "--", token)
    assert secret_on_command_line.returncode == 2  # no such option: secrets never go on the command line


def test_a_token_starting_with_a_dash_goes_after_double_dash(shared_issuer: LocalIssuer) -> None:
    """An opaque token may begin with "-": after "--" (or on stdin) it is the token, not an option."""
    token = "-" + shared_issuer.issue_opaque(scope="read", audience=AUDIENCE)
    args = ["verify", "--issuer", shared_issuer.issuer, "--audience", AUDIENCE, "--client-id", shared_issuer.client_id]
    env = {"RS_SECRET": shared_issuer.client_secret}
    as_option = tokenguard(*args, "--client-secret-env", "RS_SECRET", token, env=env)
    assert as_option.returncode == 2 and "put -- before it" in tokenguard("verify", "--help").stdout
    after = tokenguard(*args, "--client-secret-env", "RS_SECRET", "--", token, env=env)
    from_stdin = tokenguard(*args, "--client-secret-env", "RS_SECRET", "-", stdin=token, env=env)
    for result in (after, from_stdin):
        assert result.returncode == 1, result.stdout + result.stderr  # read as the token: unknown, so inactive
        assert "usage:" not in result.stderr


def test_verify_unreachable_issuer_exit_2(shared_issuer: LocalIssuer) -> None:
    """An issuer that cannot be reached gives 503 and exit 2: the token could not be judged."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    issuer = f"http://127.0.0.1:{port}"
    claims = {"iss": issuer, "aud": AUDIENCE, "exp": int(time.time()) + 300}
    token = pyjwt.encode(claims, shared_issuer.key("RS256").private, algorithm="RS256", headers={"kid": "rs256-1"})
    result = tokenguard("verify", "--issuer", issuer, "--audience", AUDIENCE, token)
    assert result.returncode == 2
    assert "503" in result.stdout


def test_discover(shared_issuer: LocalIssuer) -> None:
    """Discovery: URLs tried with their answers and lifetimes, the JWKS kids and algorithms, readiness."""
    env = {"RS_SECRET": shared_issuer.client_secret}
    args = [
        "discover",
        shared_issuer.issuer,
        "--client-id",
        shared_issuer.client_id,
        "--client-secret-env",
        "RS_SECRET",
    ]
    result = tokenguard(*args, "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout)
    tried = {entry["url"]: entry for entry in data["metadata"]}
    assert tried[shared_issuer.origin + "/.well-known/oauth-authorization-server"]["status"] == 404
    found = tried[shared_issuer.origin + "/.well-known/openid-configuration"]
    assert found["status"] == 200 and found["issuer_matches"] is True and found["ms"] >= 0
    assert data["jwks"]["lifetime_s"] == 300  # the issuer's max-age=300, within the default bounds
    assert {(k["kid"], k["alg"]) for k in data["jwks"]["keys"]} >= {("rs256-1", "RS256"), ("es256-2", "ES256")}
    assert data["readiness"]["ok"] is True
    assert [c["name"] for c in data["readiness"]["checks"]] == ["metadata", "jwks", "introspection"]
    human = tokenguard(*args, env=env)
    assert "kid rs256-1: RSA" in human.stdout and "readiness: ready" in human.stdout
    broken = tokenguard(*args, env={"RS_SECRET": "wrong"})
    assert broken.returncode == 1
    assert "FAIL introspection" in broken.stdout


def test_mint_serves_until_interrupted() -> None:
    """``mint`` prints a token its running issuer vouches for, and stops cleanly on Ctrl-C."""
    process = subprocess.Popen(
        [str(ENTRY_POINT), "mint", "--json", "--scope", "read", "--audience", AUDIENCE, "--path", "/dev"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        data: dict[str, Any] = json.loads(process.stdout.readline())
        assert data["serving"] is True and data["issuer"].endswith("/dev")
        with TokenGuard.from_issuer(data["issuer"], audience=AUDIENCE) as guard:
            claims = guard.verify_sync(data["token"])
        assert claims.scopes == frozenset({"read"})
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_mint_once_says_the_issuer_is_gone() -> None:
    """``--once`` stops the issuer at once and says the token can no longer be verified."""
    result = tokenguard("mint", "--once", "--opaque")
    assert result.returncode == 0
    assert "no longer verified" in result.stdout


@given(st.text(max_size=300))
def test_inspect_never_crashes(text: str) -> None:
    """Any text either decodes or is refused with InvalidToken, nothing else."""
    try:
        result = inspect_token(text, time.time())
    except InvalidToken:
        return
    assert isinstance(result["problems"], list)


@given(st.dictionaries(st.sampled_from(["alg", "typ", "kid", "jku", "crit"]), st.none() | st.text() | st.integers()))
def test_inspect_any_header(header: dict[str, Any]) -> None:
    """Any header and claim values: problems is a list of strings, never an exception."""
    import base64

    def segment(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    claims = {"exp": header.get("kid"), "nbf": header.get("typ"), "aud": header.get("alg")}
    token = f"{segment(header)}.{segment(claims)}."
    try:
        result = inspect_token(token, time.time())
    except InvalidToken:
        return
    assert all(isinstance(p, str) for p in result["problems"])


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "in 0s"), (59, "in 59s"), (-61, "1m 1s ago"), (3 * 3600 + 125, "in 3h 2m"), (-86400 * 2, "2d ago")],
)
def test_relative(seconds: float, text: str) -> None:
    """Times are shown relative to now, two units at most."""
    assert relative(seconds) == text


def _unsigned(header: dict[str, Any], claims_json: str) -> str:
    import base64

    def segment(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()

    return f"{segment(json.dumps(header))}.{segment(claims_json)}.AAAA"


@pytest.mark.parametrize("member", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", ["9" * 400, "1e400", "-1e400"])
def test_inspect_survives_numbers_beyond_float(member: str, value: str) -> None:
    """JSON numbers too large for a float (``10**400``, ``1e400``) are reported, not a traceback."""
    token = _unsigned({"alg": "RS256", "typ": "at+jwt", "kid": "k"}, f'{{"{member}": {value}, "aud": "a"}}')
    result = tokenguard("inspect", "-", stdin=token)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "claims (not verified):" in result.stdout
    as_json = tokenguard("inspect", "--json", "-", stdin=token)
    assert as_json.returncode == 0, as_json.stderr
    assert isinstance(json.loads(as_json.stdout)["problems"], list)


def test_inspect_escapes_hostile_member_names() -> None:
    """Member names come from the token: ESC and CR are escaped, never sent to the terminal raw."""
    token = _unsigned({"alg": "RS256", "\x1b]0;owned\x07": 1}, '{"\\u001b[2J\\rfake: ok": 1, "exp": 1}')
    result = tokenguard("inspect", "-", stdin=token)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\r" not in result.stdout and "\x07" not in result.stdout
    assert "\\x1b[2J\\rfake: ok" in result.stdout


def test_discover_survives_a_hostile_jwks(shared_issuer: LocalIssuer) -> None:
    """A JWK Set whose ``keys`` is not a list, and metadata with control characters: a report, no traceback."""
    hostile = LocalIssuer()
    hostile.jwks = lambda: {"keys": 5}  # type: ignore[method-assign]
    real_metadata = hostile.metadata
    hostile.metadata = lambda: {**real_metadata(), "scopes_supported": ["read\x1b[2J", 7]}  # type: ignore[method-assign]
    with hostile:
        result = tokenguard("discover", hostile.issuer)
        as_json = tokenguard("discover", "--json", hostile.issuer)
    assert "Traceback" not in result.stderr + as_json.stderr
    assert result.returncode == 1, result.stdout + result.stderr
    assert "readiness: NOT READY" in result.stdout
    assert "\x1b" not in result.stdout
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["jwks"]["keys"] == []


def test_https_error_names_the_command_line_flag() -> None:
    """The command's https refusal says --allow-http, the flag that exists here."""
    result = tokenguard("discover", "http://issuer.example")
    assert result.returncode == 2
    assert "--allow-http" in result.stderr and "FetchSettings" not in result.stderr


def test_verify_escapes_claims_and_cuts_huge_details(shared_issuer: LocalIssuer) -> None:
    """A signed token's own words (a user-chosen sub) cannot forge report lines; a 10**400 exp stays short."""
    forged = "\x1b[2Jmallory\r\nvalid\n  subject:  admin"
    token = shared_issuer.issue(subject=forged, scope="read\x07", audience=AUDIENCE)
    result = tokenguard("verify", "--issuer", shared_issuer.issuer, "--audience", AUDIENCE, "-", stdin=token)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\x1b" not in result.stdout and "\r" not in result.stdout and "\x07" not in result.stdout
    assert result.stdout.count("\n  subject:") == 1
    assert "\\x1b[2Jmallory\\r\\nvalid\\n" in result.stdout
    huge = shared_issuer.issue(claims={**shared_issuer.claims(audience=AUDIENCE), "exp": 10**400})
    result = tokenguard("verify", "--issuer", shared_issuer.issuer, "--audience", AUDIENCE, "-", stdin=huge)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "malformed exp claim" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) < 400


def test_client_id_without_a_secret_source_is_a_usage_error() -> None:
    """A forgotten --client-secret-env is named (exit 2), not tried as an unauthenticated client."""
    for command in (["verify", "--issuer", "http://127.0.0.1:9", "--no-audience"], ["discover", "http://127.0.0.1:9"]):
        result = tokenguard(*command, "--client-id", "rs", *(["tok"] if command[0] == "verify" else []))
        assert result.returncode == 2, result.stdout + result.stderr
        assert "--client-id needs --client-secret-env VAR or --client-secret-prompt" in result.stderr
