"""Sender-constrained guards at their seams: direct verify(), adapters without a request, options.

Tokens come from the loopback :class:`LocalIssuer`; proofs from joserfc.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tokenguard import InvalidToken
from tokenguard.dpop import access_token_hash, jwk_thumbprint
from tokenguard.request_auth import RequestContext, verify_request, verify_request_sync
from tokenguard.testing import LocalIssuer

from .test_sender_units import EC, make_proof

URL = "https://api.test/books"


def bound(issuer: LocalIssuer, **cnf: str) -> str:
    return issuer.issue(extra_claims={"cnf": cnf})


@pytest.mark.parametrize("options", [{"dpop": "allowed"}, {"mtls": True}, {"dpop": "allowed", "mtls": True}])
def test_direct_verify_refuses_bound_tokens(shared_issuer: LocalIssuer, options: dict[str, Any]) -> None:
    """verify()/verify_sync() called directly (Django, DRF, MCP verifiers, user code) judge the token
    as plain Bearer: a DPoP- or certificate-bound token has no proof there and is refused (RFC 9449 §7.2,
    RFC 8705 §3), even after the same token passed once through verify_request and sits in the cache."""
    guard = shared_issuer.guard(introspection=False, **options)
    jkt = jwk_thumbprint(EC.as_dict(private=False))
    for cnf in ({"jkt": jkt}, {"x5t#S256": "A" * 43}):
        token = bound(shared_issuer, **cnf)
        with pytest.raises(InvalidToken):
            guard.verify_sync(token)
        with pytest.raises(InvalidToken):
            asyncio.run(guard.verify(token))
    # Unbound tokens still pass.
    assert guard.verify_sync(shared_issuer.issue()).subject == "user-1"
    guard.close()


def test_direct_verify_after_request_verified(shared_issuer: LocalIssuer) -> None:
    """A bound token accepted with its proof through verify_request is cached; a later direct
    verify() of the same token (a cache hit) is still refused."""
    guard = shared_issuer.guard(introspection=False, dpop="allowed")
    jkt = jwk_thumbprint(EC.as_dict(private=False))
    token = bound(shared_issuer, jkt=jkt)
    import time

    def context() -> RequestContext:
        proof = make_proof(iat=int(time.time()), ath=access_token_hash(token))
        return RequestContext(method="GET", url=URL, headers=(("authorization", f"DPoP {token}"), ("dpop", proof)))

    assert verify_request_sync(guard, context()).dpop_jkt == jkt
    assert asyncio.run(verify_request(guard, context())).dpop_jkt == jkt
    with pytest.raises(InvalidToken):
        guard.verify_sync(token)
    with pytest.raises(InvalidToken):
        asyncio.run(guard.verify(token))
    guard.close()


@pytest.mark.parametrize("options", [{"dpop": "required"}, {"mtls": {"required": True}}])
def test_direct_verify_honours_required_modes(shared_issuer: LocalIssuer, options: dict[str, Any]) -> None:
    """With DPoP or certificate binding required, a direct verify() (no proof, no certificate) refuses
    even an unbound token: a Django view must not serve what the middleware adapters refuse."""
    from tokenguard.mtls import MTLSSettings

    if "mtls" in options:
        options = {"mtls": MTLSSettings(required=True)}
    guard = shared_issuer.guard(introspection=False, **options)
    with pytest.raises(InvalidToken):
        guard.verify_sync(shared_issuer.issue())
    guard.close()


def test_explicit_proof_of_possession_keeps_direct_verify_open(shared_issuer: LocalIssuer) -> None:
    """proof_of_possession=True says the application checks the binding itself: verify() admits cnf."""
    guard = shared_issuer.guard(introspection=False, dpop="allowed", proof_of_possession=True)
    assert guard.verify_sync(bound(shared_issuer, jkt="x" * 43)).get("cnf") == {"jkt": "x" * 43}
    guard.close()


@pytest.mark.parametrize("token_type", ["DPoP", "dpop"])
def test_introspection_answer_of_dpop_token_type_is_an_access_token(token_type: str) -> None:
    """RFC 9449 §6.2: introspection names a DPoP-bound access token's type "DPoP" (oidc-provider does).
    The strict token_type check must take it for an access token; the binding is checked through cnf."""
    import time

    from tokenguard.introspection import Introspection, check_answer

    now = time.time()
    config = Introspection(endpoint="https://as.test/introspect", client_id="c", client_secret="s")
    document = {"active": True, "sub": "u", "token_type": token_type, "cnf": {"jkt": "x" * 43}, "exp": now + 60}
    assert check_answer(document, config, now).claims is not None
    refresh = dict(document, token_type="refresh_token")
    assert check_answer(refresh, config, now).claims is None
