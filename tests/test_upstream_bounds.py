"""The guard's own upstream reads are bounded as sent and as inflated: a gzip bomb from a JWKS or an
introspection endpoint is a 503, never a 64 MiB buffer; only the codings the reader inflates are offered."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from tokenguard import FetchSettings, Introspection, JWTIssuer, ServiceUnavailable, TokenGuard
from tokenguard._effects import DEFAULT_MAX_RESPONSE_BYTES
from tokenguard.testing import LocalIssuer

from .flavours import verify
from .test_client_bounds import Coded, Endless, gzip_bomb

pytestmark = pytest.mark.integration

LOOPBACK = FetchSettings(require_https=False)


@pytest.fixture
def bomb() -> Iterator[Endless]:
    gzip_bomb()  # compressed before any memory is traced
    with Endless("gzip") as server:
        yield server



def peak_while(call: Any) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_gzip_bomb_of_keys_is_a_503_without_inflating_it(
    shared_issuer: LocalIssuer, bomb: Endless, flavour: str
) -> None:
    """JWKS answered with 64 KiB of gzip that inflates to 64 MiB: refused at the bound, memory stays small."""
    issuer = JWTIssuer(shared_issuer.issuer, audience="https://api.test", jwks_uri=f"{bomb.url}/jwks", fetch=LOOPBACK)
    token = shared_issuer.issue(audience="https://api.test")
    with TokenGuard([issuer]) as guard:

        def call() -> None:
            with pytest.raises(ServiceUnavailable):
                verify(guard, token, flavour)

        peak = peak_while(call)
    assert peak < 8 * DEFAULT_MAX_RESPONSE_BYTES, f"{peak / 2**20:.1f} MiB held"


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_gzip_bomb_of_an_introspection_answer_is_a_503(bomb: Endless, flavour: str) -> None:
    """The same from the introspection endpoint."""
    introspection = Introspection(endpoint=f"{bomb.url}/introspect", client_id="api", client_secret="secret")
    with TokenGuard(introspection=introspection) as guard:

        def call() -> None:
            with pytest.raises(ServiceUnavailable):
                verify(guard, "an-opaque-token", flavour)

        peak = peak_while(call)
    assert peak < 8 * DEFAULT_MAX_RESPONSE_BYTES, f"{peak / 2**20:.1f} MiB held"


@pytest.mark.parametrize("coding", ["gzip", "deflate", "identity"])
def test_compressed_introspection_answers_are_read(coding: str) -> None:
    """Introspection answers in the codings offered are inflated and used; only gzip and deflate are offered."""
    answer = b'{"active": true, "sub": "user-1", "scope": "read", "exp": 4102444800}'
    with Coded(coding, answer) as server:
        introspection = Introspection(endpoint=f"{server.url}/introspect", client_id="api", client_secret="s")
        with TokenGuard(introspection=introspection) as guard:
            assert guard.verify_sync("opaque-token").subject == "user-1"
    assert server.offered == ["gzip, deflate"]


@pytest.mark.parametrize("label", ["identity, gzip", "gzip, identity", "Identity,GZIP", "gzip,"])
def test_identity_listed_beside_the_coding_is_no_coding(label: str) -> None:
    """``identity`` (or an empty member) listed beside gzip changes nothing: the answer is gzip, inflated and
    used as httpx did before the bounded reader, not refused as stacked codings."""
    answer = b'{"active": true, "sub": "user-1", "scope": "read", "exp": 4102444800}'
    with Coded("gzip", answer, label=label) as server:
        introspection = Introspection(endpoint=f"{server.url}/introspect", client_id="api", client_secret="s")
        with TokenGuard(introspection=introspection) as guard:
            assert guard.verify_sync("opaque-token").subject == "user-1"


def test_codings_really_stacked_are_still_refused() -> None:
    """Two codings (gzip twice, or gzip and one not offered) stay a 503: only one is inflated here."""
    for label in ("gzip, gzip", "gzip, br"):
        with Coded("gzip", b'{"active": true, "sub": "u"}', label=label) as server:
            introspection = Introspection(endpoint=f"{server.url}/introspect", client_id="api", client_secret="s")
            with TokenGuard(introspection=introspection) as guard, pytest.raises(ServiceUnavailable):
                guard.verify_sync("opaque-token")


def test_an_answer_in_a_coding_not_offered_is_a_503() -> None:
    """An upstream answering in br (not offered) is refused, not handed to a decoder httpx may or may not have."""
    with Coded("br", b'{"active": true, "sub": "u"}') as server:
        introspection = Introspection(endpoint=f"{server.url}/introspect", client_id="api", client_secret="s")
        with TokenGuard(introspection=introspection) as guard, pytest.raises(ServiceUnavailable):
            guard.verify_sync("opaque-token")


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_corrupt_deflate_answer_is_a_503(flavour: str) -> None:
    """A body labelled deflate that is neither zlib-wrapped nor raw deflate is refused as corrupt (a 503),
    after one fallback to raw deflate: the fallback used to retry itself until a RecursionError escaped."""
    with Coded("identity-deflate", b"not deflate at all") as server:
        introspection = Introspection(endpoint=f"{server.url}/introspect", client_id="api", client_secret="s")
        with TokenGuard(introspection=introspection) as guard, pytest.raises(ServiceUnavailable):
            verify(guard, "opaque-token", flavour)


@pytest.mark.parametrize("coding", ["br", "gzip", "deflate"])
def test_token_clients_say_an_undecodable_answer_is_the_endpoints_fault(coding: str) -> None:
    """A token answer in a coding not offered, or corrupt gzip or deflate, is a TokenEndpointError / DianError
    (invalid_response), not a raw httpx.DecodingError; the clients offer only gzip and deflate."""
    from tokenguard.client import ClientCredentialsAuth, DianClient, DianError, TokenEndpointError

    from .test_client_bounds import DIAN_OPTIONS

    corrupt = {"gzip": b"\x1f\x8b\x08\x00not really gzip", "deflate": b"not deflate at all"}
    server = Coded(coding, b"{}")
    if coding in corrupt:
        server = Coded(f"identity-{coding}", corrupt[coding])
    with server:
        auth = ClientCredentialsAuth("api", "secret", token_endpoint=f"{server.url}/token")
        with pytest.raises(TokenEndpointError, match="could not be decoded") as refused:
            auth.get_token_sync()
        assert refused.value.error == "invalid_response"
        dian = DianClient(server.url, sleep=lambda s: None, **DIAN_OPTIONS)
        with pytest.raises(DianError, match="could not be decoded"):
            dian.login()
        dian.close()
    assert server.offered and set(server.offered) == {"gzip, deflate"}
