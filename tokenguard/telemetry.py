"""OpenTelemetry spans around upstream calls, when OpenTelemetry is installed.

tokenguard does not depend on OpenTelemetry. When ``opentelemetry-api`` is
importable, every upstream call (discovery, JWKS, introspection, userinfo)
runs in a client span named ``tokenguard <purpose>``, under whatever span is
current (the request's, with the usual ASGI/WSGI instrumentation), carrying
the method, the URL without its query, the status and a failure reason. No
token, secret or claim is ever put on a span.

Without OpenTelemetry, :func:`upstream_span` is a no-op context manager.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["upstream_span"]

try:  # pragma: no cover - depends on the environment
    from opentelemetry import trace as _trace

    _tracer: Any = _trace.get_tracer("tokenguard")
    _CLIENT: Any = _trace.SpanKind.CLIENT
except ImportError:  # pragma: no cover - depends on the environment
    _tracer = None
    _CLIENT = None


class SpanHandle:
    """What the runner may say about a call while its span is open."""

    __slots__ = ("_span",)

    def __init__(self, span: Any) -> None:
        self._span = span

    def status(self, code: int) -> None:
        if self._span is not None:
            self._span.set_attribute("http.response.status_code", code)
            if code >= 500 or code == 429:
                self._span.set_status(_trace.Status(_trace.StatusCode.ERROR))

    def failure(self, reason: str) -> None:
        if self._span is not None:
            self._span.set_attribute("error.type", reason)
            self._span.set_status(_trace.Status(_trace.StatusCode.ERROR))


_NO_SPAN = SpanHandle(None)


@contextmanager
def upstream_span(purpose: str, method: str, endpoint: str) -> Iterator[SpanHandle]:
    """A client span for one upstream call (``endpoint`` must carry no query or secret)."""
    if _tracer is None:
        yield _NO_SPAN
        return
    attributes = {"http.request.method": method, "url.full": endpoint, "tokenguard.upstream": purpose}
    with _tracer.start_as_current_span(
        f"tokenguard {purpose}", kind=_CLIENT, attributes=attributes, record_exception=False
    ) as span:
        yield SpanHandle(span)
