"""A hand-cranked runner for tokenguard's sans-I/O flows: step, check the effect, send a canned reply.

A flow is a generator that yields effects (an :class:`HttpRequest`, a shared-store
operation such as ``SharedGet`` or the ``SharedWait`` wait) and receives their
results. The runners in ``tokenguard._runner`` perform those effects; here a test
performs them by hand, as httpx's own tests step ``DigestAuth.auth_flow``::

    step = Step(source.metadata_flow(now))
    step.request("GET", "https://idp.test/.well-known/oauth-authorization-server")
    step.reply(404)
    step.request("GET", "https://idp.test/.well-known/openid-configuration")
    step.reply(200, {"issuer": "https://idp.test"})
    assert step.result() == {"issuer": "https://idp.test"}

No sockets, threads or clocks: a test sees every effect in order and decides
every answer, so outcomes that depend on timing (cooldowns, freshness, an
election lost to another process) are exact.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Generator, Mapping
from typing import Any, Generic, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tokenguard._effects import HttpReply, HttpRequest, SharedEffect
from tokenguard.errors import ServiceUnavailable

T = TypeVar("T")
E = TypeVar("E", bound=SharedEffect)

_UNSET: Any = object()


def canned(status: int = 200, body: object = b"", headers: Mapping[str, str] | None = None) -> HttpReply:
    """An :class:`HttpReply` as the runners build it: lower-cased headers, body bytes (JSON-encoded if not bytes)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HttpReply(status, {k.lower(): v for k, v in (headers or {}).items()}, raw)


class Step(Generic[T]):
    """Drives one flow by hand. Each method checks or answers the effect the flow yielded last.

    Exceptions the flow raises propagate from the method that resumed it, so
    ``with pytest.raises(ServiceUnavailable): step.reply(500)`` reads as the
    story it tells.
    """

    def __init__(self, flow: Generator[Any, Any, T]) -> None:
        self._flow = flow
        self._effect: Any = None
        self._value: Any = _UNSET
        #: Every effect the flow yielded, in order.
        self.effects: list[Any] = []
        self._resume(lambda: next(flow))

    def _resume(self, step: Any) -> None:
        try:
            self._effect = step()
        except StopIteration as stop:
            self._effect, self._value = None, stop.value
            return
        self.effects.append(self._effect)

    @property
    def done(self) -> bool:
        """Whether the flow has returned."""
        return self._value is not _UNSET

    @property
    def effect(self) -> Any:
        """The effect the flow is waiting on."""
        assert not self.done, f"the flow already returned {self._value!r}"
        return self._effect

    def request(self, method: str | None = None, url: str | None = None) -> HttpRequest:
        """Assert the flow waits on an HTTP request (with this method and URL, when given); return it."""
        effect = self.effect
        assert isinstance(effect, HttpRequest), f"expected an HTTP request, the flow yielded {effect!r}"
        if method is not None:
            assert effect.method == method, effect
        if url is not None:
            assert effect.url == url, f"expected {url}, the flow asked for {effect.url}"
        return effect

    def reply(self, status: int = 200, body: object = b"", headers: Mapping[str, str] | None = None) -> Step[T]:
        """Answer the pending HTTP request with a canned reply."""
        self.request()
        reply = canned(status, body, headers)
        self._resume(lambda: self._flow.send(reply))
        return self

    def send_reply(self, reply: HttpReply) -> Step[T]:
        """Answer the pending HTTP request with ``reply`` itself (e.g. one reply shared by two flows)."""
        self.request()
        self._resume(lambda: self._flow.send(reply))
        return self

    def fail(self, error: ServiceUnavailable | None = None) -> Step[T]:
        """Make the pending request fail as the runners report a transport error: thrown into the flow."""
        self.request()
        thrown = error or ServiceUnavailable("upstream request failed", reason="transport")
        self._resume(lambda: self._flow.throw(thrown))
        return self

    def store(self, kind: type[E], key: str | None = None) -> E:
        """Assert the flow waits on a shared-store effect of ``kind`` (for ``key``, when given); return it."""
        effect = self.effect
        assert isinstance(effect, kind), f"expected {kind.__name__}, the flow yielded {effect!r}"
        if key is not None:
            assert getattr(effect, "key", None) == key, f"expected key {key!r}, got {effect!r}"
        return effect

    def answer(self, value: object) -> Step[T]:
        """Answer the pending shared-store effect with ``value``."""
        effect = self.effect
        assert isinstance(effect, SharedEffect), f"expected a shared-store effect, the flow yielded {effect!r}"
        self._resume(lambda: self._flow.send(value))
        return self

    def result(self) -> T:
        """Assert the flow has returned, and return its value."""
        assert self.done, f"the flow still waits on {self._effect!r}"
        value: T = self._value
        return value


def forbid_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to open a network connection fail the test: flow tests must need none."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a flow test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def returns_at_once(flow: Generator[Any, Any, T]) -> T:
    """Run a flow that must need no effect at all (a fresh cache, a cooldown); return its value."""
    step = Step(flow)
    assert step.done, f"expected no effect, the flow yielded {step.effect!r}"
    return step.result()


def ec_jwk(kid: str) -> dict[str, str]:
    """A fresh P-256 public JWK with ``kid`` (cheap to generate, no socket, no issuer)."""
    numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()

    def b64(value: int) -> str:
        return base64.urlsafe_b64encode(value.to_bytes(32, "big")).rstrip(b"=").decode()

    x, y = b64(numbers.x), b64(numbers.y)
    return {"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"}
