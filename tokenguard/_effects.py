"""The effects a flow yields, as pure data: HTTP requests and replies, a call to
the custom verifier, and the shared-store operations.

Strategy: every multi-step exchange (discovery → JWKS → verify, introspection,
the shared-store elections) is a generator *flow* that yields one of these
and receives its answer (httpx's ``Auth.auth_flow`` pattern, h11's events).
Nothing here performs anything: the runners in ``_runner.py`` are the only
code that does, so a flow is tested by stepping it with canned answers
(``tests/flowkit.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from .errors import ServiceUnavailable

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "CallVerifier",
    "Effect",
    "Flow",
    "GuardFlow",
    "HttpReply",
    "HttpRequest",
    "SharedAdd",
    "SharedDelete",
    "SharedEffect",
    "SharedGet",
    "SharedSet",
    "SharedWait",
    "json_object",
]

T = TypeVar("T")

#: Upper bound on any upstream document (discovery, JWKS, introspection).
DEFAULT_MAX_RESPONSE_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """An HTTP request a flow needs performed. Pure data."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    form: tuple[tuple[str, str], ...] | None = field(default=None, repr=False)
    #: Concurrent requests with the same key share one upstream call; ``None`` never shares.
    coalesce_key: str | None = None
    max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    #: Which upstream this is, for error text and stats ("jwks", "discovery", "introspection").
    purpose: str = "upstream"
    #: The version of the document the flow saw when it decided to fetch; lets
    #: a caller that arrives just after an identical fetch reuse its reply.
    generation: int | None = None


@dataclass(frozen=True, slots=True)
class HttpReply:
    """What came back: status, lower-cased headers, body bytes."""

    status: int
    headers: Mapping[str, str]
    body: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class CallVerifier:
    """Ask the user's custom verifier about a token (sync or async callable)."""

    verifier: Callable[[str], object] = field(repr=False)
    token: str = field(repr=False)


def json_object(reply: HttpReply, source: str) -> dict[str, Any]:
    """The body of a 200 reply as a JSON object; anything else is the upstream's fault.

    Raises:
        ServiceUnavailable: non-200 status, invalid JSON, or JSON that is not an object.
    """
    if reply.status != 200:
        raise ServiceUnavailable(f"{source} answered HTTP {reply.status}")
    try:
        document = json.loads(reply.body)
    except (ValueError, RecursionError):
        raise ServiceUnavailable(f"{source} answer is not valid JSON") from None
    if not isinstance(document, dict):
        raise ServiceUnavailable(f"{source} answer is not a JSON object")
    return document


# ---------------------------------------------------------------------- shared-store operations


class SharedEffect:
    """An operation on the shared store (``shared.py``); the runners perform it.

    ``default`` is what the flow receives when no shared store is configured.
    """

    __slots__ = ()
    default: ClassVar[Any] = None


class SharedGet(SharedEffect):
    """Read ``key``; the flow receives the bytes or ``None``."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"SharedGet({self.key!r})"


class SharedSet(SharedEffect):
    """Write ``key`` for ``ttl`` seconds; the flow receives ``None``."""

    __slots__ = ("key", "ttl", "value")

    def __init__(self, key: str, value: bytes, ttl: float) -> None:
        self.key = key
        self.value = value
        self.ttl = ttl

    def __repr__(self) -> str:
        return f"SharedSet({self.key!r}, ttl={self.ttl!r})"


class SharedAdd(SharedEffect):
    """Write ``key`` only if absent (a lock); the flow receives whether it did."""

    __slots__ = ("key", "ttl")
    default = True

    def __init__(self, key: str, ttl: float) -> None:
        self.key = key
        self.ttl = ttl

    def __repr__(self) -> str:
        return f"SharedAdd({self.key!r}, ttl={self.ttl!r})"


class SharedDelete(SharedEffect):
    """Remove ``key``; the flow receives ``None``."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"SharedDelete({self.key!r})"


class SharedWait(SharedEffect):
    """Wait for another process's value at ``key``: the flow receives
    ``(value, False)`` once ``accept(value)`` holds, or ``(None, busy)``.

    Pure data: the runners do the polling and the sleeping
    (``_runner.wait_sync`` / ``wait_async``). Used by the processes that lost
    the lock race while the winner calls the provider and stores its answer
    under ``key``. The wait ends after ``timeout`` or as soon as ``lock`` is
    gone without an acceptable value (the winner failed). ``busy`` says the
    caller should answer 503 rather than call the provider itself: the winner
    is still calling, or took more than ``retry_budget`` seconds to fail (the
    provider is slow; a second call would add load and, bounded by the same
    deadline, keep this request waiting past it). A winner that failed fast
    leaves the caller free to retry once.
    """

    __slots__ = ("accept", "key", "lock", "timeout")
    default = (None, False)
    #: Seconds between two looks at the store.
    poll_seconds: ClassVar[float] = 0.02
    #: A waiter whose winner failed within this many seconds of its wait
    #: retries the call itself; later, it answers 503. So a waiter's whole
    #: wait stays within the upstream deadline plus this.
    retry_budget: ClassVar[float] = 1.0

    def __init__(self, key: str, lock: str, timeout: float, accept: Callable[[bytes], bool] = bool) -> None:
        self.key = key
        self.lock = lock
        self.timeout = timeout
        self.accept = accept

    def __repr__(self) -> str:
        return f"SharedWait({self.key!r}, lock={self.lock!r}, timeout={self.timeout!r})"

    def found(self, value: bytes | None) -> bool:
        """Whether ``value`` (read at ``key``) ends the wait with success."""
        return value is not None and self.accept(value)

    def gives_up(self, held: bool, waited: float) -> bool:
        """Whether to stop looking: the lock is gone (the winner is done) or the time is up."""
        return waited >= self.timeout or not held

    def outcome(self, value: bytes | None, held: bool, waited: float) -> tuple[bytes | None, bool]:
        """The answer once the wait gives up, ``value`` being a last read of ``key``.

        The winner stores its answer, then releases its lock: both may have
        happened between the two reads that made the runner give up, hence
        the last read.
        """
        if self.found(value):
            return value, False
        return None, held or waited >= self.retry_budget


Effect = HttpRequest | CallVerifier | SharedEffect
#: A fetch flow: yields requests (and shared-store effects), receives replies (and their answers).
Flow = Generator[HttpRequest | SharedEffect, Any, T]
#: The guard's top-level flow, which may also call a custom verifier.
GuardFlow = Generator[Effect, Any, T]
