"""Log records that name the cause when a refusal is the configuration's fault.

A token refused for being expired or forged is the client's business and is
logged at DEBUG by the guard. A token refused because *this API's*
configuration does not match the issuer's reality (a trailing slash in the
issuer, the wrong audience, ``typ`` or algorithm, a rotated key, a wrong
introspection secret, an unreachable issuer) is an operator's business: it
refuses every user, so it is logged here at WARNING or ERROR, naming the
configured value and the presented one, so the log says which setting to fix.

Rules:

* Every value that came from a token or a request passes through
  :func:`~tokenguard._logtext.loggable` (escaped, truncated). The token itself
  never reaches a log line.
* Records are rate-limited per reason and configured value (once per
  :data:`DIAGNOSTIC_INTERVAL`): a flood of bad tokens cannot flood the log.
  The next record of a reason says how many were suppressed meanwhile.
* Each record carries structured ``extra`` fields (``event``, ``reason``,
  ``configured``, ``presented``, ``url``, ``status``, ``error``,
  ``suppressed``), for JSON log formatters and for tests.

Logger name: ``tokenguard.diagnostics``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ._logtext import loggable, public_url

__all__ = [
    "DIAGNOSTIC_INTERVAL",
    "algorithm_not_allowed",
    "audience_mismatch",
    "check_route_scopes",
    "client_auth_failed",
    "failure_since",
    "issuer_unknown",
    "metadata_issuer_mismatch",
    "reset",
    "token_type_mismatch",
    "unknown_kid",
    "unknown_route_scopes",
    "upstream_failed",
]

logger = logging.getLogger("tokenguard.diagnostics")

#: Seconds between two records of the same reason (and configured value).
#: Once a minute is enough to notice a misconfiguration and little enough
#: that a token flood adds at most one line per minute per reason.
DIAGNOSTIC_INTERVAL = 60.0

_MAX_REASONS = 1024
_lock = threading.Lock()
#: ``(reason, configured) -> (last logged at, suppressed since)``.
_last: dict[tuple[str, str], tuple[float, int]] = {}
_clock: Callable[[], float] = time.monotonic
#: ``url -> (when, what went wrong)``: the last transport failure per upstream, for readiness reports.
_failures: dict[str, tuple[float, str]] = {}


def reset() -> None:
    """Forget the rate limits, so the next record of every reason is logged (for tests)."""
    with _lock:
        _last.clear()
        _failures.clear()


def failure_since(url: str, since: float) -> str | None:
    """What went wrong with ``url`` at or after ``since`` (a ``time.monotonic()`` value), if anything."""
    with _lock:
        seen = _failures.get(url)
    return seen[1] if seen is not None and seen[0] >= since else None


def _admit(reason: str, configured: str) -> int | None:
    """``None`` when this record is suppressed, else how many were suppressed before it."""
    now = _clock()
    key = (reason, configured)
    with _lock:
        seen = _last.get(key)
        if seen is not None and now - seen[0] < DIAGNOSTIC_INTERVAL:
            _last[key] = (seen[0], seen[1] + 1)
            return None
        if seen is None and len(_last) >= _MAX_REASONS:
            # Configured values are few; a full table means something odd: start afresh.
            _last.clear()
        _last[key] = (now, 0)
        return seen[1] if seen is not None else 0


def _emit(level: int, reason: str, message: str, *, configured: str = "", **fields: Any) -> None:
    if not logger.isEnabledFor(level):
        return
    suppressed = _admit(reason, configured)
    if suppressed is None:
        return
    if suppressed:
        message += f" ({suppressed} more since the last such record)"
    extra = {"event": "tokenguard_diagnostic", "reason": reason, "configured": configured, "suppressed": suppressed}
    extra.update(fields)
    logger.log(level, "%s", message, extra=extra)


def _listed(values: Iterable[str] | None) -> str:
    if values is None:
        return "(any)"
    return ", ".join(loggable(v) for v in values) or "(none)"


def _near_miss(presented: str, configured: Iterable[str]) -> str:
    """A hint when ``presented`` differs from a configured value in a way people trip over."""
    for value in configured:
        if presented.rstrip("/") == value.rstrip("/"):
            return "; they differ only by a trailing slash"
        swapped = presented.replace("://localhost", "://127.0.0.1")
        if swapped == value.replace("://localhost", "://127.0.0.1"):
            return "; they differ only by localhost vs 127.0.0.1"
        if presented.lower() == value.lower():
            return "; they differ only in letter case"
    return ""


# ---------------------------------------------------------------- token vs configuration


def issuer_unknown(presented: object, configured: Iterable[str]) -> None:
    """A JWT names an issuer no configured issuer matches (refused as ``untrusted issuer``)."""
    names = list(configured)
    shown = loggable(presented) if isinstance(presented, str) else "(no iss claim)"
    hint = _near_miss(presented, names) if isinstance(presented, str) else ""
    _emit(
        logging.WARNING,
        "unknown_issuer",
        f"token refused: its iss {shown!s} is not a configured issuer (configured: {_listed(names)}){hint}",
        configured=_listed(names),
        presented=shown,
    )


def audience_mismatch(issuer: str, configured: Iterable[str], presented: object) -> None:
    """A token of ``issuer`` carries an ``aud`` this API does not accept."""
    names = list(configured)
    if isinstance(presented, str):
        shown, hint = loggable(presented), _near_miss(presented, names)
    elif isinstance(presented, list):
        shown, hint = "[" + ", ".join(loggable(a) for a in presented[:10]) + "]", ""
    else:
        shown, hint = ("(no aud claim)" if presented is None else f"(malformed aud: {type(presented).__name__})"), ""
    _emit(
        logging.WARNING,
        "audience_mismatch",
        f"token of issuer {loggable(issuer)} refused: its aud {shown} matches no configured audience "
        f"(configured: {_listed(names)}){hint}",
        configured=_listed(names),
        presented=shown,
        issuer=loggable(issuer),
    )


def token_type_mismatch(configured: Iterable[str | None], presented: object) -> None:
    """A token's ``typ`` header is not one of the accepted ``token_types`` (``None``: no ``typ``)."""
    names = ["(none)" if name is None else name for name in configured]
    shown = loggable(presented) if isinstance(presented, str) else "(no typ header)"
    _emit(
        logging.WARNING,
        "token_type",
        f"token refused: its typ {shown} is not an accepted token type (token_types: {_listed(names)})",
        configured=_listed(names),
        presented=shown,
    )


def algorithm_not_allowed(configured: Iterable[str], presented: object) -> None:
    """A token's ``alg`` is outside the configured allow-list."""
    names = sorted(configured)
    shown = loggable(presented) if isinstance(presented, str) else "(no alg header)"
    _emit(
        logging.WARNING,
        "algorithm_not_allowed",
        f"token refused: its alg {shown} is not allowed (algorithms: {_listed(names)})",
        configured=_listed(names),
        presented=shown,
    )


def unknown_kid(presented: str, known: Iterable[str], where: str) -> None:
    """No key with the token's ``kid`` in the key set, after any refetch the cooldown allowed.

    Static keys are never refetched; a fetched JWK Set was refetched for this
    ``kid`` unless another unknown ``kid`` did so within ``kid_refetch_cooldown``.
    """
    names = sorted(known)
    _emit(
        logging.WARNING,
        "unknown_kid",
        f"token refused: no key with kid {loggable(presented)} in {loggable(where)} "
        f"(kids: {_listed(names)}); a fetched JWKS is refetched for an unknown kid once per kid_refetch_cooldown",
        configured=loggable(where),
        presented=loggable(presented),
        known=_listed(names),
    )


def unknown_route_scopes(issuer: str, scopes: Iterable[str], supported: Iterable[str]) -> None:
    """Route scopes the issuer's metadata does not list in ``scopes_supported``."""
    missing = sorted(scopes)
    _emit(
        logging.WARNING,
        "unknown_route_scope",
        f"route scope(s) {_listed(missing)} not in scopes_supported of {loggable(issuer)}; "
        "no token can carry them, so those routes answer 403 to everyone (a typo?)",
        configured=_listed(missing),
        issuer=loggable(issuer),
        supported=_listed(sorted(supported)),
    )


# ---------------------------------------------------------------- upstreams


def metadata_issuer_mismatch(where: str, configured: str, presented: object) -> None:
    """A discovery document names another issuer (RFC 8414 §3.3, OIDC Discovery §4.3 require equality)."""
    shown = loggable(presented) if isinstance(presented, str) else "(no issuer member)"
    hint = _near_miss(presented, [configured]) if isinstance(presented, str) else ""
    _emit(
        logging.ERROR,
        "metadata_issuer_mismatch",
        f"{loggable(where)} names issuer {shown}; the configured issuer is exactly {loggable(configured)}{hint}",
        configured=loggable(configured),
        presented=shown,
    )


def client_auth_failed(purpose: str, endpoint: str, status: int) -> None:
    """An introspection or token endpoint refused this API's own client credentials."""
    endpoint = public_url(endpoint)  # never a user:password@ or query secret in a log record
    _emit(
        logging.ERROR,
        "client_auth_failed",
        f"{purpose} endpoint {loggable(endpoint)} answered HTTP {status}: it refused this API's client "
        "credentials (check client_id / client_secret / auth_method); every such call fails until fixed",
        configured=loggable(endpoint),
        url=loggable(endpoint),
        status=status,
        purpose=purpose,
    )


def upstream_failed(purpose: str, url: str, error: BaseException | str) -> None:
    """A discovery, JWKS, introspection or token request failed in transport (or answered nonsense)."""
    detail = error if isinstance(error, str) else _describe(error)
    with _lock:
        if len(_failures) >= _MAX_REASONS:
            _failures.clear()
        _failures[url] = (_clock(), loggable(detail, 200))
    shown = loggable(public_url(url))  # never a user:password@ or query secret in a log record
    _emit(
        logging.ERROR,
        "upstream_failed",
        f"{purpose} request to {shown} failed: {loggable(detail, 200)}",
        configured=shown,
        url=shown,
        error=loggable(detail, 200),
        purpose=purpose,
    )


def _describe(error: BaseException) -> str:
    """The innermost cause of a transport error: the OS error says what really happened."""
    parts = [f"{type(error).__name__}: {error}" if str(error) else type(error).__name__]
    cause = error.__cause__ or error.__context__
    depth = 0
    while cause is not None and depth < 4:
        text = str(cause)
        if text and text not in parts[-1]:
            parts.append(text)
        cause = cause.__cause__ or cause.__context__
        depth += 1
    return " <- ".join(parts)


def check_route_scopes(issuer: str, scopes: Iterable[str], document: Any) -> list[str]:
    """Warn about route scopes the issuer's metadata does not support; return them.

    Only an issuer that publishes ``scopes_supported`` (RFC 8414 §2, OIDC
    Discovery §3, both RECOMMENDED) can be checked; without it nothing is said.
    """
    supported = document.get("scopes_supported") if isinstance(document, dict) else None
    if not isinstance(supported, list):
        return []
    offered = {s for s in supported if isinstance(s, str)}
    missing = sorted(set(scopes) - offered)
    if missing:
        unknown_route_scopes(issuer, missing, offered)
    return missing
