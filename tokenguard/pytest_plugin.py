"""pytest plugin: a real loopback issuer, tokens, key rotation and guards for your API's tests.

Installed with tokenguard (entry point ``pytest11``), so the fixtures are
available in every test suite without a ``conftest.py``; ``-p no:tokenguard``
turns it off. Every fixture name starts with ``tokenguard_``:

``tokenguard_issuer`` (session)
    A :class:`~tokenguard.testing.LocalIssuer` serving discovery, JWKS,
    introspection and a token endpoint on ``127.0.0.1``. Keys are made once
    per session (RSA keys take a while to generate).
``tokenguard_audience`` (session)
    The audience tokens are minted for and guards expect; override the
    fixture, or set ``tokenguard_audience`` in the ini file.
``tokenguard_token``
    A :class:`TokenFactory`: ``tokenguard_token(scope="read")`` mints a JWT,
    ``tokenguard_token.opaque(...)`` an opaque token known to introspection,
    ``tokenguard_token.header(...)`` an ``Authorization`` header dict.
``tokenguard_keys``
    :class:`KeyRotation`: ``rotate()`` publishes a new signing key (new
    tokens use it), ``withdraw(kid)`` stops publishing one; the session
    issuer's keys are restored after the test.
``tokenguard_guard``
    A factory of :class:`~tokenguard.TokenGuard` objects pointed at the issuer
    (discovery, introspection credentials, the audience); each is closed after
    the test.

Why a real issuer and not a mocked verifier: the application under test runs
exactly the code it runs in production (discovery, JWKS fetch, signature and
claim checks, its middleware), so a test that passes means a real token is
accepted and a bad one refused with the right RFC 6750 answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import pytest

from .guard import TokenGuard
from .testing import LocalIssuer, SigningKey

__all__ = ["KeyRotation", "TokenFactory"]

DEFAULT_AUDIENCE = "https://api.test"
DEFAULT_ALGORITHMS = ("RS256", "ES256")


def pytest_addoption(parser: pytest.Parser) -> None:
    """Ini settings: the audience and signing algorithms of the session issuer."""
    parser.addini("tokenguard_audience", "audience of tokenguard_token tokens and guards", default=DEFAULT_AUDIENCE)
    parser.addini(
        "tokenguard_algorithms",
        "signing algorithms of tokenguard_issuer, space-separated, asymmetric (HS keys are not published); "
        "the first signs by default",
        default=" ".join(DEFAULT_ALGORITHMS),
    )


class TokenFactory:
    """Mints access tokens from the session issuer.

    Args:
        issuer: the issuer that signs (JWT) or remembers (opaque) the tokens.
        audience: the default ``aud``.
    """

    def __init__(self, issuer: LocalIssuer, audience: str) -> None:
        self.issuer = issuer
        self.audience = audience

    def __call__(
        self,
        scope: str | Iterable[str] | None = None,
        *,
        subject: str | None = "user-1",
        audience: str | list[str] | None | type[_Default] = None,
        expires_in: float = 300,
        client_id: str | None = "client-app",
        alg: str | None = None,
        typ: str | None = "at+jwt",
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed JWT access token (RFC 9068).

        Args:
            scope: a space-separated scope string, as on the wire
                (``"read write"``), or a list of scope names.
            subject: ``sub``; ``None`` for a client-credentials token.
            audience: ``aud``; default the fixture's audience.
            expires_in: seconds to ``exp``; negative for an expired token.
            client_id: ``client_id``.
            alg: the signing algorithm; default the issuer's first
                (its newest key for that algorithm signs).
            typ: the JOSE ``typ`` header (``None``: none).
            extra_claims: any other claims (``{"tenant": "a"}``).
        """
        return self.issuer.issue(
            alg=alg or self.issuer.default_alg,
            typ=typ,
            subject=subject,
            audience=self._audience(audience),
            scope=_scope(scope),
            expires_in=expires_in,
            client_id=client_id,
            extra_claims=extra_claims,
        )

    def opaque(
        self,
        scope: str | Iterable[str] | None = None,
        *,
        subject: str | None = "user-1",
        audience: str | list[str] | None | type[_Default] = None,
        expires_in: float = 300,
        client_id: str | None = "client-app",
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """An opaque token, verified by RFC 7662 introspection at the issuer."""
        return self.issuer.issue_opaque(
            subject=subject,
            audience=self._audience(audience),
            scope=_scope(scope),
            expires_in=expires_in,
            client_id=client_id,
            extra_claims=extra_claims,
        )

    def header(self, scope: str | Iterable[str] | None = None, **options: Any) -> dict[str, str]:
        """``{"Authorization": "Bearer <jwt>"}`` for a new token (same arguments as calling the factory)."""
        return {"Authorization": f"Bearer {self(scope, **options)}"}

    def revoke(self, token: str) -> None:
        """Make introspection answer ``active: false`` for ``token``."""
        self.issuer.revoke(token)

    def _audience(self, audience: str | list[str] | None | type[_Default]) -> str | list[str] | None:
        if audience is None:
            return self.audience
        if audience is _Default:
            return None
        assert not isinstance(audience, type)
        return audience


class _Default:
    """Pass ``audience=NO_AUDIENCE`` for a token without ``aud``."""


#: ``tokenguard_token(audience=NO_AUDIENCE)``: a token with no ``aud`` claim.
NO_AUDIENCE = _Default


def _scope(scope: str | Iterable[str] | None) -> str | list[str] | None:
    if scope is None or isinstance(scope, str):
        return scope
    return list(scope)


class KeyRotation:
    """Rotate or withdraw the session issuer's signing keys within one test.

    The keys the issuer had before the test are restored afterwards, so other
    tests see the issuer as it was.
    """

    def __init__(self, issuer: LocalIssuer) -> None:
        self.issuer = issuer
        self._saved = issuer.signing_keys()

    def rotate(self, alg: str | None = None) -> SigningKey:
        """Publish a new key for ``alg`` (default: the issuer's default algorithm); new tokens use it."""
        return self.issuer.rotate(alg or self.issuer.default_alg)

    def withdraw(self, kid: str) -> None:
        """Stop publishing ``kid``: tokens signed with it are refused once guards refetch the JWKS."""
        self.issuer.remove_key(kid)

    def restore(self) -> None:
        """Put back the keys the issuer had when the fixture started."""
        self.issuer.restore_signing_keys(self._saved)


@pytest.fixture(scope="session")
def tokenguard_audience(pytestconfig: pytest.Config) -> str:
    """The audience of minted tokens and of guards (ini ``tokenguard_audience``)."""
    value = pytestconfig.getini("tokenguard_audience")
    return str(value) if value else DEFAULT_AUDIENCE


@pytest.fixture(scope="session")
def tokenguard_issuer(pytestconfig: pytest.Config) -> Iterator[LocalIssuer]:
    """A real issuer on a loopback port for the whole session."""
    algorithms = str(pytestconfig.getini("tokenguard_algorithms") or "").split() or list(DEFAULT_ALGORITHMS)
    with LocalIssuer(algorithms=algorithms) as issuer:
        yield issuer


@pytest.fixture
def tokenguard_token(tokenguard_issuer: LocalIssuer, tokenguard_audience: str) -> TokenFactory:
    """Mint JWT or opaque access tokens from ``tokenguard_issuer``."""
    return TokenFactory(tokenguard_issuer, tokenguard_audience)


@pytest.fixture
def tokenguard_keys(tokenguard_issuer: LocalIssuer) -> Iterator[KeyRotation]:
    """Rotate or withdraw signing keys; restored after the test."""
    rotation = KeyRotation(tokenguard_issuer)
    try:
        yield rotation
    finally:
        rotation.restore()


@pytest.fixture
def tokenguard_guard(tokenguard_issuer: LocalIssuer, tokenguard_audience: str) -> Iterator[Callable[..., TokenGuard]]:
    """A factory of guards for ``tokenguard_issuer``: ``tokenguard_guard(**TokenGuard options)``.

    Introspection is configured (the issuer's client credentials), so opaque
    tokens work; pass ``introspection=False`` for a JWT-only guard.
    """
    made: list[TokenGuard] = []

    def make(*, introspection: bool = True, **options: Any) -> TokenGuard:
        options.setdefault("audience", tokenguard_audience)
        if introspection:
            options.setdefault("client_id", tokenguard_issuer.client_id)
            options.setdefault("client_secret", tokenguard_issuer.client_secret)
        guard = TokenGuard.from_issuer(tokenguard_issuer.issuer, **options)
        made.append(guard)
        return guard

    try:
        yield make
    finally:
        for guard in made:
            guard.close()
