"""httpx's request log lines never show the credentials of a URL tokenguard was configured with."""

from __future__ import annotations

import logging

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenguard import Introspection, TokenGuard
from tokenguard._urlredact import _key, keep_out_of_logs
from tokenguard.errors import TokenError
from tokenguard.testing import LocalIssuer


@pytest.mark.integration
def test_introspection_endpoint_credentials_stay_out_of_httpx_lines(caplog: pytest.LogCaptureFixture) -> None:
    """An introspection endpoint with user:password@ and a query secret: httpx's INFO line shows neither."""
    with LocalIssuer(algorithms=("ES256",)) as server:
        host = server.introspection_endpoint.split("://", 1)[1]
        endpoint = f"http://svc:pa55word@{host}?api_key=pa55word"
        introspection = Introspection(endpoint=endpoint, client_id=server.client_id, client_secret=server.client_secret)
        with TokenGuard(introspection=introspection) as guard, caplog.at_level(logging.INFO):
            with pytest.raises(TokenError):
                guard.verify_sync("an-opaque-token-nobody-issued")
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert any("/introspect" in line for line in lines), lines
    assert not any("pa55word" in line for line in lines), lines


def test_other_urls_are_logged_untouched(caplog: pytest.LogCaptureFixture) -> None:
    """The filter rewrites only registered URLs: the application's other httpx calls keep their query."""
    keep_out_of_logs("https://registered.example/token?secret=1")
    client = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(200)))
    with client, caplog.at_level(logging.INFO):
        client.get("https://other.example/search?q=books")
        client.get("https://REGISTERED.example:443/token?secret=1")
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert "https://other.example/search?q=books" in lines[0]
    assert "secret" not in lines[1] and "https://registered.example/token" in lines[1]


def test_plain_urls_are_not_registered() -> None:
    """A URL with neither userinfo nor query has nothing to hide: the registry does not grow."""
    from tokenguard._urlredact import _REDACTOR

    before = set(_REDACTOR._keys)
    keep_out_of_logs("https://plain.example/jwks")
    keep_out_of_logs("https://plain.example/a@b")  # an @ in the path is no userinfo
    assert _REDACTOR._keys == before


@given(st.text(max_size=80))
def test_key_never_raises(text: str) -> None:
    """Any text (URLs come from configuration and discovery documents) gives a key."""
    assert isinstance(_key(text), str)


@pytest.mark.integration
@pytest.mark.parametrize(
    "userinfo_and_path",
    [
        ("svc:hunter2@x", "/token?key=hunter2"),  # an unencoded @ in the password: httpx writes %40
        ("svc:hunter 2", "/token?key=hunter2"),  # a space: httpx writes %20
        ("svc:hunter2-ü", "/token?key=hunter2"),  # non-ASCII: httpx percent-encodes it
        ("svc:hunter2", "/x/../token?key=hunter2"),  # a dot segment: httpx removes it
    ],
)
def test_urls_httpx_rewrites_stay_redacted(
    userinfo_and_path: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """httpx prints the URL it normalised (percent-encoding, dot segments), not the one configured:
    the registered URL must still match, or the password reaches httpx's INFO line."""
    from tokenguard.client import ClientCredentialsAuth, TokenEndpointError

    userinfo, path = userinfo_and_path
    with LocalIssuer(algorithms=("ES256",)) as server:
        host = server.token_endpoint.split("://", 1)[1].split("/", 1)[0]
        url = f"http://{userinfo}@{host}{path}"
        auth = ClientCredentialsAuth("svc", "wrong-secret", token_endpoint=url)
        with caplog.at_level(logging.INFO), pytest.raises(TokenEndpointError):
            auth.get_token_sync()
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert any("/token" in line for line in lines), lines
    assert not any("hunter" in line for line in lines), lines
