"""Diagnostics: refusals caused by configuration are logged at WARNING/ERROR, naming the cause.

Each test captures the records of ``tokenguard.diagnostics`` and checks their
level and structured fields; none may contain the token or a secret.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import jwt as pyjwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenguard import (
    BreakerSettings,
    ConfigurationError,
    FetchSettings,
    InvalidToken,
    ServiceUnavailable,
    TokenGuard,
    diagnostics,
)
from tokenguard.client import ClientCredentialsAuth, InvalidClient
from tokenguard.testing import LocalIssuer

SECRET = "a-shared-secret-long-enough-for-hs512-" + "x" * 40
ISSUER = "https://idp.example/tenant"
AUDIENCE = "https://api.example"


@pytest.fixture(autouse=True)
def _fresh_limits() -> Iterator[None]:
    diagnostics.reset()
    yield
    diagnostics.reset()


def _records(caplog: pytest.LogCaptureFixture, reason: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "tokenguard.diagnostics" and getattr(r, "reason", None) == reason]


def _hmac_guard(**options: Any) -> TokenGuard:
    return TokenGuard.from_keys(
        issuer=ISSUER, audience=AUDIENCE, hmac_keys={None: SECRET}, algorithms=["HS256"], **options
    )


def _hmac_token(alg: str = "HS256", headers: dict[str, Any] | None = None, **claims: Any) -> str:
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u", "exp": 4_000_000_000, **claims}
    return pyjwt.encode(payload, SECRET, algorithm=alg, headers=headers)


def _no_secrets(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    text = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    for secret in secrets:
        assert secret not in text


def test_unknown_issuer_names_both_values_and_the_trailing_slash(caplog: pytest.LogCaptureFixture) -> None:
    """An ``iss`` differing by a trailing slash: WARNING with configured, presented, and the hint."""
    token = _hmac_token(iss=ISSUER + "/")
    with caplog.at_level(logging.DEBUG), pytest.raises(InvalidToken, match="untrusted issuer"):
        _hmac_guard().verify_sync(token)
    [record] = _records(caplog, "unknown_issuer")
    assert record.levelno == logging.WARNING
    assert record.configured == ISSUER
    assert record.presented == ISSUER + "/"
    assert "trailing slash" in record.getMessage()
    _no_secrets(caplog, token, SECRET)


def test_unknown_issuer_localhost_vs_loopback_address(caplog: pytest.LogCaptureFixture) -> None:
    """``localhost`` against ``127.0.0.1`` is named as such."""
    guard = TokenGuard.from_keys(
        issuer="http://127.0.0.1:8080/realm", audience=AUDIENCE, hmac_keys={None: SECRET}, algorithms=["HS256"]
    )
    token = _hmac_token(iss="http://localhost:8080/realm")
    with caplog.at_level(logging.WARNING), pytest.raises(InvalidToken):
        guard.verify_sync(token)
    [record] = _records(caplog, "unknown_issuer")
    assert "localhost vs 127.0.0.1" in record.getMessage()


def test_audience_mismatch(caplog: pytest.LogCaptureFixture) -> None:
    """A wrong ``aud``: WARNING naming the issuer, the accepted audiences and the token's."""
    token = _hmac_token(aud=["https://other.example", AUDIENCE + "/"])
    with caplog.at_level(logging.WARNING), pytest.raises(InvalidToken, match="wrong audience"):
        _hmac_guard().verify_sync(token)
    [record] = _records(caplog, "audience_mismatch")
    assert record.levelno == logging.WARNING
    assert record.configured == AUDIENCE
    assert record.presented == f"[https://other.example, {AUDIENCE}/]"
    assert record.issuer == ISSUER
    _no_secrets(caplog, token, SECRET)


def test_token_type(caplog: pytest.LogCaptureFixture) -> None:
    """A ``typ`` outside ``token_types``: WARNING with both."""
    token = _hmac_token(headers={"typ": "JWT"})
    with caplog.at_level(logging.WARNING), pytest.raises(InvalidToken, match="wrong token type"):
        _hmac_guard(token_types=("at+jwt",)).verify_sync(token)
    [record] = _records(caplog, "token_type")
    assert (record.levelno, record.configured, record.presented) == (logging.WARNING, "at+jwt", "JWT")


def test_algorithm_not_allowed(caplog: pytest.LogCaptureFixture) -> None:
    """An ``alg`` outside the allow-list: WARNING with both."""
    token = _hmac_token(alg="HS384")
    with caplog.at_level(logging.WARNING), pytest.raises(InvalidToken, match="algorithm not allowed"):
        _hmac_guard().verify_sync(token)
    [record] = _records(caplog, "algorithm_not_allowed")
    assert (record.levelno, record.configured, record.presented) == (logging.WARNING, "HS256", "HS384")


@pytest.mark.integration
def test_unknown_kid_after_refetch(issuer: LocalIssuer, caplog: pytest.LogCaptureFixture) -> None:
    """A ``kid`` the issuer does not publish, even after a refetch: WARNING naming it and the published ones."""
    issuer.add_key("RS256", kid="withdrawn")
    token = issuer.issue(kid="withdrawn")
    issuer.remove_key("withdrawn")
    guard = issuer.guard(introspection=False)
    with caplog.at_level(logging.WARNING), pytest.raises(InvalidToken, match="unknown signing key"):
        guard.verify_sync(token)
    assert issuer.requests["/jwks"] >= 1
    [record] = _records(caplog, "unknown_kid")
    assert record.levelno == logging.WARNING
    assert record.presented == "withdrawn"
    assert "rs256-1" in record.known
    _no_secrets(caplog, token)


def test_rate_limited_per_reason_then_counts_what_was_suppressed(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three refusals in a minute give one record; the next one, a minute later, says two were suppressed."""
    now = [1000.0]
    monkeypatch.setattr(diagnostics, "_clock", lambda: now[0])
    guard = _hmac_guard()
    with caplog.at_level(logging.WARNING):
        for n in range(3):
            with pytest.raises(InvalidToken):
                guard.verify_sync(_hmac_token(aud=f"https://wrong-{n}.example"))
        with pytest.raises(InvalidToken):  # another reason is not suppressed by the first
            guard.verify_sync(_hmac_token(alg="HS512"))
        assert len(_records(caplog, "audience_mismatch")) == 1
        assert len(_records(caplog, "algorithm_not_allowed")) == 1
        now[0] += diagnostics.DIAGNOSTIC_INTERVAL
        with pytest.raises(InvalidToken):
            guard.verify_sync(_hmac_token(aud="https://wrong-again.example"))
    first, second = _records(caplog, "audience_mismatch")
    assert (first.suppressed, second.suppressed) == (0, 2)
    assert "2 more since the last such record" in second.getMessage()


def test_presented_values_are_escaped_and_truncated(caplog: pytest.LogCaptureFixture) -> None:
    """A forged ``aud`` with CR/LF and 3 kB cannot forge log lines or fill the disk."""
    token = _hmac_token(aud="evil\r\nINFO forged line" + "x" * 3_000)
    with caplog.at_level(logging.WARNING), pytest.raises(InvalidToken):
        _hmac_guard().verify_sync(token)
    [record] = _records(caplog, "audience_mismatch")
    message = record.getMessage()
    assert "\n" not in message and "\r" not in message
    assert "evil\\r\\nINFO forged line" in message
    assert len(message) < 600


@pytest.mark.integration
def test_introspection_401_is_client_auth_failed(issuer: LocalIssuer, caplog: pytest.LogCaptureFixture) -> None:
    """A wrong introspection secret: ERROR naming endpoint and status, outcome ``client_auth_failed``, a failure."""
    guard = issuer.guard(client_secret="not-the-secret")
    token = issuer.issue_opaque()
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            with pytest.raises(ServiceUnavailable) as caught:
                guard.verify_sync(token)
            assert caught.value.description == "introspection endpoint refused this API's client credentials (HTTP 401)"
    [record] = _records(caplog, "client_auth_failed")  # rate-limited: one record for two calls
    assert record.levelno == logging.ERROR
    assert record.status == 401
    assert record.url == issuer.introspection_endpoint
    metrics = guard.metrics()
    assert metrics.upstream_calls[("introspection", "client_auth_failed")] == 2
    assert ("introspection", "ok") not in metrics.upstream_calls
    assert guard.stats["upstream_failures"] >= 2
    _no_secrets(caplog, token, "not-the-secret")


@pytest.mark.integration
def test_token_endpoint_401_is_logged_with_endpoint(issuer: LocalIssuer, caplog: pytest.LogCaptureFixture) -> None:
    """The outbound client: a token endpoint refusing our credentials is an ERROR naming the endpoint."""
    auth = ClientCredentialsAuth(issuer.client_id, "wrong-secret", token_endpoint=issuer.token_endpoint)
    with caplog.at_level(logging.WARNING), pytest.raises(InvalidClient):
        auth.get_token_sync()
    [record] = _records(caplog, "client_auth_failed")
    assert (record.levelno, record.status, record.url, record.purpose) == (
        logging.ERROR,
        401,
        issuer.token_endpoint,
        "token",
    )
    _no_secrets(caplog, "wrong-secret")


def _unsigned_rs256(claims: dict[str, Any]) -> str:
    def segment(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{segment({'alg': 'RS256', 'kid': 'k1'})}.{segment(claims)}.c2lnbmF0dXJl"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.integration
def test_unreachable_issuer_logs_url_and_os_error_and_keeps_one_cause(caplog: pytest.LogCaptureFixture) -> None:
    """Issuer down: ERROR with the URL and the OS error; every 503 names the same cause."""
    issuer = f"http://127.0.0.1:{_closed_port()}/oidc"
    guard = TokenGuard.from_issuer(issuer, audience=AUDIENCE)
    token = _unsigned_rs256({"iss": issuer, "aud": AUDIENCE, "exp": 4_000_000_000})
    descriptions = []
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            with pytest.raises(ServiceUnavailable) as caught:
                guard.verify_sync(token)
            descriptions.append(caught.value.description)
    assert descriptions == ["discovery request failed"] * 3
    record = _records(caplog, "upstream_failed")[0]
    assert record.levelno == logging.ERROR
    assert record.url.startswith(f"http://127.0.0.1:{issuer.split(':')[2].split('/')[0]}/.well-known/")
    assert "ConnectError" in record.error
    guard.close()


def test_https_error_names_the_option_as_written() -> None:
    """The https error names ``fetch=FetchSettings(require_https=False)``, and that spelling works."""
    with pytest.raises(ConfigurationError, match=r"fetch=FetchSettings\(require_https=False\)"):
        TokenGuard.from_issuer("http://idp.example", audience=AUDIENCE)
    TokenGuard.from_issuer("http://idp.example", audience=AUDIENCE, fetch=FetchSettings(require_https=False)).close()


class _ScopedIssuer(LocalIssuer):
    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "scopes_supported": ["openid", "read", "write"]}


@pytest.mark.integration
def test_route_scope_absent_from_scopes_supported(caplog: pytest.LogCaptureFixture) -> None:
    """A misspelt route scope: one WARNING when the metadata is first loaded; a later one at once."""
    with _ScopedIssuer() as issuer:
        guard = issuer.guard(introspection=False)
        guard.requires("raed")
        guard.requires("read")
        with caplog.at_level(logging.WARNING):
            guard.verify_sync(issuer.issue(scope="read"))
            guard.verify_sync(issuer.issue(scope="write"))  # metadata already loaded: no new record
            [record] = _records(caplog, "unknown_route_scope")
            assert record.levelno == logging.WARNING
            assert record.configured == "raed"
            assert "read" in record.supported
            guard.requires("wirte")  # declared after the load: checked at once
        late = _records(caplog, "unknown_route_scope")[1]
        assert late.configured == "wirte"


@pytest.mark.parametrize(
    ("build", "option"),
    [
        (lambda: TokenGuard.from_keys(issuer=ISSUER, audience=AUDIENCE), "jwks=, keys= or hmac_keys="),
        (lambda: _hmac_guard(token_types="at+jwt"), "token_types must be a sequence"),
        (lambda: _hmac_guard(required_claims="sub"), "required_claims must be a sequence"),
        (
            lambda: TokenGuard.from_issuer(ISSUER, audience=AUDIENCE, algorithms="RS256"),
            "algorithms must be a sequence",
        ),
        (lambda: TokenGuard.from_issuer(ISSUER, audience=AUDIENCE, algorithms=["none"]), "algorithms: 'none'"),
        (lambda: TokenGuard.from_issuer(ISSUER, audience=[""]), "audience must"),
        (lambda: TokenGuard.from_issuer(ISSUER, audience=AUDIENCE, check_revocation=True), "check_revocation=True"),
        (
            lambda: TokenGuard.from_keys(
                issuer=ISSUER, audience=AUDIENCE, hmac_keys={None: SECRET}, algorithms=["RS256"]
            ),
            "hmac_keys given but algorithms=",
        ),
        (
            lambda: TokenGuard.from_issuer(
                ISSUER, audience=AUDIENCE, introspection_endpoint="http://idp.example/i", client_id="rs"
            ),
            "introspection_endpoint must use https",
        ),
        (lambda: TokenGuard(), "issuers=, introspection= or verifier="),
    ],
)
def test_configuration_errors_name_the_option(build: Any, option: str) -> None:
    """Each ConfigurationError names the option as the user writes it (a bare string is refused, not split)."""
    with pytest.raises(ConfigurationError) as caught:
        build()
    assert option in str(caught.value)


@pytest.mark.integration
def test_wrong_secret_stops_reaching_the_provider(issuer: LocalIssuer) -> None:
    """Repeated client_auth_failed opens the breaker: the provider is spared, and the 503 still names the cause."""
    guard = issuer.guard(client_secret="not-the-secret")
    threshold = BreakerSettings().failure_threshold
    for _ in range(threshold):
        with pytest.raises(ServiceUnavailable):
            guard.verify_sync(issuer.issue_opaque())
    with pytest.raises(ServiceUnavailable) as caught:
        guard.verify_sync(issuer.issue_opaque())
    assert caught.value.reason == "circuit_open"
    assert caught.value.description == (
        "introspection paused after repeated failures "
        "(introspection endpoint refused this API's client credentials (HTTP 401))"
    )
    assert issuer.requests["/introspect"] == threshold


@given(
    presented=st.one_of(st.none(), st.text(max_size=400), st.lists(st.text(max_size=50), max_size=20), st.integers()),
    configured=st.lists(st.text(min_size=1, max_size=60), min_size=1, max_size=3),
)
def test_any_presented_value_gives_one_escaped_line(presented: Any, configured: list[str]) -> None:
    """Whatever a token carries, each diagnostic is one printable line of bounded size, and never raises."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    diagnostics.logger.addHandler(handler)
    try:
        for emit in (
            lambda: diagnostics.issuer_unknown(presented, configured),
            lambda: diagnostics.audience_mismatch(configured[0], configured, presented),
            lambda: diagnostics.token_type_mismatch(configured, presented),
            lambda: diagnostics.algorithm_not_allowed(configured, presented),
            lambda: diagnostics.unknown_kid(str(presented), configured, "the issuer's key set"),
        ):
            diagnostics.reset()
            emit()
    finally:
        diagnostics.logger.removeHandler(handler)
    assert len(records) == 5
    for record in records:
        message = record.getMessage()
        assert message.isascii() and message.isprintable()
        assert len(message) < 3000


@pytest.mark.integration
def test_introspected_audience_mismatch(issuer: LocalIssuer, caplog: pytest.LogCaptureFixture) -> None:
    """An active introspection answer for another audience: WARNING naming both, as for JWTs."""
    guard = issuer.guard(audience=AUDIENCE)
    token = issuer.issue_opaque(audience=AUDIENCE + "/")
    with caplog.at_level(logging.WARNING), pytest.raises(InvalidToken, match="wrong audience"):
        guard.verify_sync(token)
    [record] = _records(caplog, "audience_mismatch")
    assert (record.configured, record.presented, record.issuer) == (AUDIENCE, AUDIENCE + "/", issuer.issuer)
    assert "trailing slash" in record.getMessage()
    _no_secrets(caplog, token, issuer.client_secret)
