"""The ``tokenguard`` command: look at tokens and issuers the way the guard does.

Sub-commands (each with ``--json`` for machine-readable output)::

    tokenguard inspect TOKEN|-          header and claims, untrusted, and what looks wrong
    tokenguard verify --issuer URL --audience A TOKEN|-
                                        full verification; every failed check in the 401's words
    tokenguard discover ISSUER          metadata URLs, JWKS kids and algorithms, lifetimes, readiness
    tokenguard mint [--audience A]      a token from a local development issuer (serves until Ctrl-C)

Exit codes: 0 success; 1 the token or issuer failed a check; 2 usage,
configuration or upstream errors (the answer could not be decided).

Secrets come only from environment variables (``--client-secret-env VAR``) or
a prompt (``--client-secret-prompt``), never from the command line, and are
never printed. Tokens are read from the argument or, with ``-``, from stdin
(which keeps them out of shell history and ``ps``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import getpass
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

import httpx

from ._clients import DEFAULT_TIMEOUT
from ._logtext import loggable
from ._runner import run_sync
from .cachecontrol import document_ttl
from .errors import ConfigurationError, InsufficientScope, InvalidToken, ServiceUnavailable, TokenError
from .jwt import JWTPolicy, UnverifiedJWS, _check_protected_header, check_claims, check_header, parse_jws, peek_issuer
from .keys import HMAC_ALGORITHMS, SUPPORTED_ALGORITHMS, KeySet, parse_jwks
from .sources import FetchSettings, check_url, discovery_urls

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2

#: ``typ`` values that name something other than an access token (RFC 8725 §3.11).
_OTHER_TYPES = {"dpop+jwt", "logout+jwt", "secevent+jwt", "token-introspection+jwt", "jwt-bearer", "id_token+jwt"}


class UsageError(Exception):
    """A command-line mistake: printed without a traceback, exit code 2."""


# ---------------------------------------------------------------- small helpers


def _read_token(value: str, stdin: TextIO) -> str:
    token = stdin.read().strip() if value == "-" else value.strip()
    if not token:
        raise UsageError("no token given (pass it as an argument, or '-' to read it from stdin)")
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    return token


def _secret(args: argparse.Namespace) -> str | None:
    if args.client_secret_env:
        value = os.environ.get(args.client_secret_env)
        if not value:
            raise UsageError(f"environment variable {args.client_secret_env} is not set or empty")
        return value
    if args.client_secret_prompt:
        return getpass.getpass("client secret: ")
    return None


#: Beyond this many seconds (about 31,700 years) a time is shown as "far" rather than counted.
_FAR = 1e12


def relative(seconds: float) -> str:
    """``seconds`` from now as ``in 4m 12s`` / ``3h 2m ago``."""
    if math.isnan(seconds):
        return "at no time (not a number)"
    if abs(seconds) > _FAR:  # a hostile token's 1e400 or 10**400 must not crash or print 400 digits
        return "in the far future" if seconds > 0 else "in the far past"
    span = abs(int(round(seconds)))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if span >= size:
            parts.append(f"{span // size}{unit}")
            span %= size
    if span or not parts:
        parts.append(f"{span}s")
    text = " ".join(parts[:2])
    return f"in {text}" if seconds >= 0 else f"{text} ago"


def _number(value: object) -> float | None:
    """A JSON number as a float (an int too large for one becomes ±inf); ``None`` for anything else."""
    if type(value) is float:
        return value
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:  # JSON allows integers of any size; float() does not
            return math.inf if value > 0 else -math.inf
    return None


def _when(value: object, now: float) -> dict[str, Any] | None:
    number = _number(value)
    if number is None:
        return None
    try:
        iso = datetime.datetime.fromtimestamp(number, datetime.UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return {"value": value, "utc": None, "relative": "out of range"}
    return {"value": value, "utc": iso, "relative": relative(number - now)}


def _cut(text: str, limit: int = 300) -> str:
    """A detail built with ``repr`` (already escaped) cut to ``limit`` characters: a token's 10**400 stays short."""
    return text if len(text) <= limit else f"{text[:limit]}...(+{len(text) - limit})"


def _emit(
    args: argparse.Namespace, data: Mapping[str, Any], human: Callable[[], str], out: TextIO, *, indent: int | None = 2
) -> None:
    if args.json:
        out.write(json.dumps(data, indent=indent, default=str) + "\n")
    else:
        out.write(human() + "\n")
    out.flush()


# ---------------------------------------------------------------- inspect


def inspect_token(token: str, now: float) -> dict[str, Any]:
    """Decode ``token`` without trusting it; list what looks wrong.

    Raises:
        InvalidToken: not a JWS compact token (opaque, or malformed).
    """
    jws = parse_jws(token)
    header, claims = dict(jws.header), dict(jws.payload)
    times = {name: _when(claims.get(name), now) for name in ("iat", "nbf", "exp", "auth_time") if name in claims}
    return {"header": header, "claims": claims, "times": times, "problems": problems(jws, now)}


def problems(jws: UnverifiedJWS, now: float) -> list[str]:
    """What a resource server would object to in this token, before any key is involved."""
    header, claims = jws.header, jws.payload
    found: list[str] = []
    alg = header.get("alg")
    if not isinstance(alg, str):
        found.append("no alg header: refused")
    elif alg.lower() == "none":
        found.append("alg none: an unsigned token, never accepted")
    elif alg not in SUPPORTED_ALGORITHMS:
        found.append(f"alg {loggable(alg)}: not an algorithm tokenguard supports")
    elif alg in HMAC_ALGORITHMS:
        found.append(f"alg {alg}: symmetric, accepted only where hmac_keys are configured")
    typ = header.get("typ")
    if typ is None:
        found.append("no typ header: refused where token_types is set (RFC 9068 access tokens carry at+jwt)")
    elif isinstance(typ, str) and typ.lower().removeprefix("application/") in _OTHER_TYPES:
        found.append(f"typ {loggable(typ)}: not an access token, refused by default (RFC 8725 §3.11)")
    elif isinstance(typ, str) and typ.lower().removeprefix("application/") != "at+jwt":
        found.append(f"typ {loggable(typ)}: not at+jwt; refused where token_types=('at+jwt',) (RFC 9068 §2.1)")
    if "kid" not in header:
        found.append("no kid header: every published key must be tried, and key rotation cannot pick one")
    elif not isinstance(header.get("kid"), str):
        found.append("kid is not a string: refused")
    for name in ("jku", "x5u", "jwk", "x5c"):
        if name in header:
            found.append(f"{name} header: ignored (keys come only from the configured issuer)")
    if "crit" in header:
        found.append("crit header: refused (no extension is implemented, RFC 7515 §4.1.11)")
    iss = claims.get("iss")
    if not isinstance(iss, str):
        found.append("no iss claim (or not a string): no issuer can be chosen")
    aud = claims.get("aud")
    if aud is None:
        found.append("no aud claim: refused wherever an audience is configured")
    elif isinstance(aud, list):
        if not aud or not all(isinstance(a, str) for a in aud):
            found.append("aud is an empty list or holds non-strings: refused")
    elif not isinstance(aud, str):
        found.append("aud is neither a string nor a list of strings: refused")
    exp = claims.get("exp")
    exp_number = _number(exp)
    if exp is None:
        found.append("no exp claim: refused by default (require_exp)")
    elif exp_number is None:
        found.append("exp is not a number: refused")
    elif exp_number <= now:
        found.append(f"expired {relative(exp_number - now).removesuffix(' ago')} ago")
    nbf = _number(claims.get("nbf"))
    if nbf is not None and nbf > now:
        found.append(f"not valid yet: nbf is {relative(nbf - now)}")
    iat = _number(claims.get("iat"))
    if iat is not None and iat > now:
        found.append(f"issued in the future: iat is {relative(iat - now)} (clock skew?)")
    if "nonce" in claims or "at_hash" in claims:
        found.append("carries nonce/at_hash: looks like an OpenID Connect ID token, not an access token")
    if "cnf" in claims:
        found.append("carries cnf: sender-constrained (DPoP/mTLS); refused when sent as a plain Bearer token")
    return found


def _human_inspect(result: Mapping[str, Any]) -> str:
    lines = ["header (not verified):"]
    # Member names come from the token: escaped (json.dumps escapes the values), so ESC or CR cannot drive the terminal.
    lines += [f"  {loggable(k)}: {json.dumps(v)}" for k, v in result["header"].items()]
    lines.append("claims (not verified):")
    for key, value in result["claims"].items():
        when = result["times"].get(key)
        suffix = f"   ({when['utc']}, {when['relative']})" if when and when.get("utc") else ""
        lines.append(f"  {loggable(key)}: {json.dumps(value)}{suffix}")
    if result["problems"]:
        lines.append("looks wrong:")
        lines += [f"  - {p}" for p in result["problems"]]
    else:
        lines.append("nothing looks wrong (the signature is not checked here: use 'tokenguard verify')")
    return "\n".join(lines)


def cmd_inspect(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    token = _read_token(args.token, stdin)
    try:
        result = inspect_token(token, time.time())
    except InvalidToken as exc:
        words = exc.description
        data = {"error": words, "hint": "not a JWT: an opaque token can only be introspected"}
        _emit(args, data, lambda: f"{words}: not a JWT (an opaque token can only be introspected)", out)
        return EXIT_FAILED
    _emit(args, result, lambda: _human_inspect(result), out)
    return EXIT_OK


# ---------------------------------------------------------------- verify


def _guard_for(args: argparse.Namespace, audience: str | Sequence[str] | None) -> Any:
    from .guard import TokenGuard

    fetch = FetchSettings(require_https=not args.allow_http)
    options: dict[str, Any] = {"fetch": fetch}
    if args.client_id:
        if not (args.client_secret_env or args.client_secret_prompt):
            # Without a secret, introspection would be tried unauthenticated and answer 401 for a forgotten flag.
            raise UsageError("--client-id needs --client-secret-env VAR or --client-secret-prompt")
        options.update(client_id=args.client_id, client_secret=_secret(args))
    return TokenGuard.from_issuer(args.issuer, audience=audience, **options)


def every_failure(guard: Any, token: str, now: float) -> list[dict[str, str]]:
    """Every check ``token`` fails, each in the words of the 401 it would cause.

    The guard stops at the first failure; this runs each check on its own
    (a failed one is neutralised, then the rest are run again), so a token
    with a wrong audience *and* an expiry shows both.
    """
    try:
        jws = parse_jws(token)
    except InvalidToken as exc:
        return [{"check": exc.description, "detail": "not a JWS compact token"}]
    failures: list[dict[str, str]] = []
    runtime = guard._issuers.get(peek_issuer(jws) or "")
    if runtime is None:
        failures.append(
            {
                "check": "untrusted issuer",
                "detail": f"token iss {jws.payload.get('iss')!r}; configured {list(guard._issuers)}",
            }
        )
        runtime = next(iter(guard._issuers.values()))
    policy: JWTPolicy = runtime.policy
    header_ok = True
    try:
        _check_protected_header(jws.header, policy.algorithms)
    except InvalidToken as exc:
        header_ok = False
        detail = f"token alg {jws.header.get('alg')!r}; allowed {sorted(policy.algorithms)}"
        failures.append({"check": exc.description, "detail": detail})
    if policy.token_types:
        try:
            check_header(jws.header, dataclasses.replace(policy, algorithms=SUPPORTED_ALGORITHMS))
        except InvalidToken as exc:
            if exc.description == "wrong token type":
                detail = f"token typ {jws.header.get('typ')!r}; accepted {list(policy.token_types)}"
                failures.append({"check": exc.description, "detail": detail})
    failures += _claim_failures(dict(jws.payload), policy, now)
    if header_ok:
        failures += _signature_failures(guard, runtime, jws, now)
    return failures


def _claim_failures(payload: dict[str, Any], policy: JWTPolicy, now: float) -> list[dict[str, str]]:
    failures: list[dict[str, str]] = []
    policy = dataclasses.replace(policy, issuer=policy.issuer)
    payload["iss"] = policy.issuer  # the issuer was judged above
    for _ in range(12):
        try:
            check_claims(payload, policy, now)
            return failures
        except InvalidToken as exc:
            words = exc.description
        detail = ""
        if words == "wrong audience":
            detail = f"token aud {payload.get('aud')!r}; accepted {list(policy.audiences or ())}"
            policy = dataclasses.replace(policy, audiences=None)
        elif words == "token has no expiry":
            policy = dataclasses.replace(policy, require_exp=False)
        elif words in ("token expired", "malformed exp claim"):
            detail = f"exp {payload.get('exp')!r} with leeway {policy.leeway:g}s"
            payload.pop("exp", None)
            policy = dataclasses.replace(policy, require_exp=False)
        elif words in ("token not yet valid", "malformed nbf claim"):
            detail = f"nbf {payload.pop('nbf', None)!r} with leeway {policy.leeway:g}s"
        elif words in ("token has no iat claim", "token issued in the future", "token too old", "malformed iat claim"):
            detail = f"iat {payload.pop('iat', None)!r}"
            policy = dataclasses.replace(policy, max_token_age=None)
        elif words == "malformed sub claim":
            payload.pop("sub", None)
        elif words.startswith("missing required claim"):
            policy = dataclasses.replace(policy, required_claims=())
        else:  # pragma: no cover - a check this loop does not know: report it and stop
            failures.append({"check": words, "detail": ""})
            return failures
        failures.append({"check": words, "detail": detail})
    return failures


def _signature_failures(guard: Any, runtime: Any, jws: UnverifiedJWS, now: float) -> list[dict[str, str]]:
    from .jwt import check_signature

    kid = jws.header.get("kid")
    kid = kid if isinstance(kid, str) else None
    keys: KeySet | None = runtime.static
    if runtime.jwks is not None:
        try:
            flow = runtime.jwks.keys_flow(kid, now)
            keys = run_sync(flow, guard._sync_client, guard._sync_coalescer, guard._upstream)
        except ServiceUnavailable as exc:
            return [{"check": "signature not checked", "detail": exc.description}]
    assert keys is not None
    try:
        check_signature(jws, keys, str(jws.header.get("alg")), kid)
    except InvalidToken as exc:
        detail = f"kid {kid!r}; published {sorted(keys.by_kid)}" if exc.description == "unknown signing key" else ""
        return [{"check": exc.description, "detail": detail}]
    return []


def cmd_verify(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    token = _read_token(args.token, stdin)
    audience = args.audience if args.audience else None
    if audience is None and not args.no_audience:
        raise UsageError("give --audience (repeatable), or --no-audience to skip the audience check")
    with _guard_for(args, audience) as guard:
        now = time.time()
        try:
            claims = guard.verify_sync(token)
            if args.scope:
                guard.require(claims, *args.scope)
        except InsufficientScope as exc:
            words, needed = exc.description, " ".join(exc.scopes)
            data = {"valid": False, "status": 403, "error": words, "needed": list(exc.scopes)}
            _emit(args, data, lambda: f"403 insufficient_scope: {words} (needs {needed})", out)
            return EXIT_FAILED
        except InvalidToken as exc:
            words = exc.description
            failures = every_failure(guard, token, now) if guard._issuers else []
            if not failures:
                failures = [{"check": words, "detail": ""}]
            data = {"valid": False, "status": 401, "error": words, "failures": failures}

            def human() -> str:
                lines = [f"401 invalid_token: {words}", "failed checks:"]
                lines += [f"  - {f['check']}" + (f"  ({_cut(f['detail'])})" if f["detail"] else "") for f in failures]
                return "\n".join(lines)

            _emit(args, data, human, out)
            return EXIT_FAILED
        except ServiceUnavailable as exc:
            words = exc.description
            data = {"valid": None, "status": 503, "error": words}
            _emit(args, data, lambda: f"503: {words} (run 'tokenguard discover {args.issuer}')", out)
            return EXIT_ERROR
        result = {
            "valid": True,
            "subject": claims.subject,
            "issuer": claims.issuer,
            "audience": list(claims.audience),
            "scopes": sorted(claims.scopes),
            "token_type": claims.token_type,
            "expires": _when(claims.exp, now),
        }

        def human_ok() -> str:
            expires = result["expires"]
            # Claims are the issuer's (often a user's own words, e.g. a chosen name as sub): escaped, so a
            # CR, LF or ESC in them can neither drive the terminal nor forge a line of this report.
            lines = [
                "valid",
                f"  subject:  {loggable(claims.subject)}",
                f"  issuer:   {loggable(claims.issuer)}",
                f"  audience: {' '.join(loggable(a) for a in claims.audience)}",
                f"  scopes:   {' '.join(loggable(s) for s in sorted(claims.scopes)) or '-'}",
                f"  type:     {loggable(claims.token_type)}",
            ]
            if expires:
                lines.append(f"  expires:  {expires['utc']} ({expires['relative']})")
            return "\n".join(lines)

        _emit(args, result, human_ok, out)
        return EXIT_OK


# ---------------------------------------------------------------- discover


def _get(client: httpx.Client, url: str) -> dict[str, Any]:
    started = time.perf_counter()
    entry: dict[str, Any] = {"url": url}
    try:
        response = client.get(url, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        entry.update(
            status=None, error=f"{type(exc).__name__}: {exc}", ms=round((time.perf_counter() - started) * 1000)
        )
        return entry
    entry["ms"] = round((time.perf_counter() - started) * 1000, 1)
    entry["status"] = response.status_code
    control = response.headers.get("cache-control")
    entry["cache_control"] = control
    settings = FetchSettings()
    entry["lifetime_s"] = document_ttl(
        control,
        response.headers.get("age"),
        default=settings.default_ttl,
        minimum=settings.min_ttl,
        maximum=settings.max_ttl,
    )
    try:
        entry["document"] = response.json() if response.status_code == 200 else None
    except ValueError:
        entry["document"] = None
        entry["error"] = "not JSON"
    return entry


def discover(issuer: str, args: argparse.Namespace) -> dict[str, Any]:
    """What ``issuer`` publishes and whether a guard could use it now."""
    check_url(issuer, require_https=not args.allow_http, what="issuer", opt_out="--allow-http")
    result: dict[str, Any] = {"issuer": issuer, "metadata": [], "jwks": None, "readiness": None}
    metadata: dict[str, Any] | None = None
    with httpx.Client(timeout=DEFAULT_TIMEOUT, follow_redirects=False) as client:
        for url in discovery_urls(issuer):
            entry = _get(client, url)
            document = entry.pop("document", None)
            if isinstance(document, dict):
                entry["issuer_matches"] = document.get("issuer") == issuer
                if not entry["issuer_matches"]:
                    entry["error"] = f"names issuer {document.get('issuer')!r}"
                elif metadata is None:
                    metadata = document
            result["metadata"].append(entry)
        if metadata is not None:
            result["scopes_supported"] = metadata.get("scopes_supported")
            result["endpoints"] = {k: v for k, v in metadata.items() if k.endswith("_endpoint") or k == "jwks_uri"}
            jwks_uri = metadata.get("jwks_uri")
            if isinstance(jwks_uri, str):
                entry = _get(
                    client,
                    check_url(jwks_uri, require_https=not args.allow_http, what="jwks_uri", opt_out="--allow-http"),
                )
                document = entry.pop("document", None)
                if isinstance(document, dict):
                    listed = document.get("keys")  # the issuer's word: any JSON at all (RFC 7517 §5 says an array)
                    entry["keys"] = [
                        {k: key.get(k) for k in ("kid", "kty", "alg", "use", "crv")}
                        for key in (listed if isinstance(listed, list) else [])
                        if isinstance(key, dict)
                    ]
                    try:
                        _, skipped = parse_jwks(document)
                        entry["unusable"] = list(skipped)
                    except ValueError as exc:
                        entry["unusable"] = [str(exc)]
                result["jwks"] = entry
    with _guard_for(args, None) as guard:
        result["readiness"] = guard.check_sync().to_dict()
    return result


def _human_discover(result: Mapping[str, Any]) -> str:
    lines = [f"issuer {result['issuer']}", "metadata URLs tried:"]
    for entry in result["metadata"]:
        answer = entry.get("error") if entry.get("status") is None else f"HTTP {entry['status']}"
        extra = ""
        if entry.get("status") == 200:
            extra = f", cache {entry.get('cache_control') or '-'} -> kept {entry['lifetime_s']:g}s"
            extra += ", issuer matches" if entry.get("issuer_matches") else f", {entry.get('error', '')}"
        lines.append(f"  {entry['url']}: {answer} in {entry.get('ms')} ms{extra}")
    jwks = result.get("jwks")
    if jwks:
        answer = jwks.get("error") if jwks.get("status") is None else f"HTTP {jwks['status']}"
        lines.append(f"jwks {loggable(jwks['url'], 300)}: {answer} in {jwks.get('ms')} ms")
        if jwks.get("status") == 200:
            lines.append(f"  cache {jwks.get('cache_control') or '-'} -> kept {jwks['lifetime_s']:g}s")
            for key in jwks.get("keys", []):
                kid, kty, crv, alg = (loggable(key.get(k) or "-") for k in ("kid", "kty", "crv", "alg"))
                lines.append(f"  kid {kid}: {kty} {crv if crv != '-' else ''} alg {alg}")
            for reason in jwks.get("unusable", []):
                lines.append(f"  unusable: {reason}")
    scopes = result.get("scopes_supported")
    if scopes is not None:
        # The issuer's words reach the terminal escaped (ESC, CR), as log lines do.
        shown = " ".join(loggable(s) for s in scopes) if isinstance(scopes, list) else loggable(scopes)
        lines.append(f"scopes_supported: {shown}")
    readiness = result["readiness"]
    lines.append("readiness: " + ("ready" if readiness["ok"] else "NOT READY"))
    marks = {"ok": "ok  ", "warning": "WARN", "failed": "FAIL"}
    for check in readiness["checks"]:
        lines.append(f"  {marks[check['status']]} {check['name']:<13} {check['detail']}")
    return "\n".join(lines)


def cmd_discover(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    args.issuer = args.issuer_url
    result = discover(args.issuer_url, args)
    _emit(args, result, lambda: _human_discover(result), out)
    return EXIT_OK if result["readiness"]["ok"] else EXIT_FAILED


# ---------------------------------------------------------------- mint


def cmd_mint(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    from .testing import LocalIssuer

    try:
        issuer = LocalIssuer(path=args.path, port=args.port, algorithms=(args.alg,)).start()
    except OSError as exc:
        raise UsageError(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}") from None
    try:
        if args.opaque:
            token = issuer.issue_opaque(
                subject=args.subject,
                audience=args.audience,
                scope=" ".join(args.scope) or None,
                expires_in=args.expires_in,
            )
        else:
            token = issuer.issue(
                alg=args.alg,
                subject=args.subject,
                audience=args.audience,
                scope=" ".join(args.scope) or None,
                expires_in=args.expires_in,
            )
        data = {
            "issuer": issuer.issuer,
            "token": token,
            "jwks_uri": issuer.jwks_uri,
            "introspection_endpoint": issuer.introspection_endpoint,
            "introspection_client_id": issuer.client_id,
            "serving": not args.once,
        }

        def human() -> str:
            lines = [
                f"issuer:  {issuer.issuer}",
                f"token:   {token}",
                "",
                "configure the API under test with:",
                f"  TokenGuard.from_issuer({issuer.issuer!r}, audience={args.audience!r})",
            ]
            if args.once:
                lines.append("\nthe issuer has stopped: the token can be inspected, but no longer verified")
            else:
                lines.append("\nserving discovery, JWKS and introspection until Ctrl-C")
            return "\n".join(lines)

        _emit(args, data, human, out, indent=None)  # one line: scripts read it, then the issuer serves on
        if not args.once:
            _serve_until_interrupted()
    finally:
        issuer.stop()
    return EXIT_OK


def _serve_until_interrupted() -> None:
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------- parser


#: Opaque tokens are random base64url text and may begin with "-", which would read as an option.
_TOKEN_HELP = "the token, or - to read it from stdin (a token starting with '-': put -- before it, or use stdin)"


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--client-id", help="this API's client id, to check introspection")
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument(
        "--client-secret-env", metavar="VAR", help="read the client secret from this environment variable"
    )
    secret.add_argument("--client-secret-prompt", action="store_true", help="prompt for the client secret")
    parser.add_argument("--allow-http", action="store_true", help="accept plain-http URLs to hosts other than loopback")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tokenguard`` command."""
    parser = argparse.ArgumentParser(
        prog="tokenguard", description="Look at Bearer tokens and issuers the way tokenguard does."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show tokenguard's log records on stderr")
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser("inspect", help="decode a token without trusting it; say what looks wrong")
    inspect.add_argument("token", help=_TOKEN_HELP)
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(run=cmd_inspect)

    verify = commands.add_parser("verify", help="verify a token against an issuer; list every failed check")
    verify.add_argument("--issuer", required=True, help="the issuer URL (exactly as in the token's iss)")
    verify.add_argument("--audience", action="append", default=[], help="an accepted audience (repeatable)")
    verify.add_argument("--no-audience", action="store_true", help="skip the audience check")
    verify.add_argument("--scope", action="append", default=[], help="a scope the token must carry (repeatable)")
    _add_client_options(verify)
    verify.add_argument("token", help=_TOKEN_HELP)
    verify.add_argument("--json", action="store_true", help="print JSON")
    verify.set_defaults(run=cmd_verify)

    discover_ = commands.add_parser("discover", help="fetch an issuer's metadata and keys; run the readiness check")
    discover_.add_argument("issuer_url", metavar="ISSUER", help="the issuer URL")
    _add_client_options(discover_)
    discover_.add_argument("--json", action="store_true", help="print JSON")
    discover_.set_defaults(run=cmd_discover)

    mint = commands.add_parser("mint", help="mint a token from a local development issuer (serves until Ctrl-C)")
    mint.add_argument("--audience", default="https://api.test", help="the token's aud (default https://api.test)")
    mint.add_argument("--scope", action="append", default=[], help="a scope to grant (repeatable)")
    mint.add_argument("--subject", default="user-1", help="the token's sub")
    mint.add_argument("--expires-in", type=int, default=3600, help="lifetime in seconds (negative: already expired)")
    mint.add_argument("--alg", default="RS256", choices=["RS256", "PS256", "ES256", "EdDSA"], help="signing algorithm")
    mint.add_argument("--opaque", action="store_true", help="an opaque token, known only to introspection")
    mint.add_argument("--port", type=int, default=0, help="port of the local issuer (default: any free one)")
    mint.add_argument("--path", default="", help="issuer path, e.g. /oidc")
    mint.add_argument("--once", action="store_true", help="print the token and stop the issuer at once")
    mint.add_argument("--json", action="store_true", help="print JSON on one line, then serve")
    mint.set_defaults(run=cmd_mint)
    return parser


def main(argv: Sequence[str] | None = None, *, out: TextIO | None = None, stdin: TextIO | None = None) -> int:
    """Run the ``tokenguard`` command; return its exit code.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).
        out: where results go (default ``sys.stdout``), for embedding and tests.
        stdin: where ``-`` reads a token from (default ``sys.stdin``).

    Returns:
        0 success, 1 a check failed, 2 usage, configuration or upstream error.
    """
    out = out or sys.stdout
    stdin = stdin or sys.stdin
    parser = build_parser()
    args = parser.parse_args(argv)
    # The command reports what it found itself; log records would repeat it on
    # stderr, so they are shown only with --verbose. The logger is put back as
    # it was on the way out: main() may run inside another program.
    package_logger = logging.getLogger("tokenguard")
    saved = package_logger.propagate, package_logger.level
    handler: logging.Handler = logging.NullHandler()
    if args.verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        package_logger.setLevel(logging.INFO)
    package_logger.addHandler(handler)
    package_logger.propagate = False
    try:
        code: int = args.run(args, out, stdin)
        return code
    except (UsageError, ConfigurationError) as exc:
        sys.stderr.write(f"tokenguard {args.command}: {exc}\n")
        return EXIT_ERROR
    except TokenError as exc:  # pragma: no cover - commands catch the ones they expect
        sys.stderr.write(f"tokenguard {args.command}: {exc.description}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    finally:
        package_logger.removeHandler(handler)
        package_logger.propagate, package_logger.level = saved
