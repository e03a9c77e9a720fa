"""The pytest plugin's fixtures, used as an application's test suite would use them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tokenguard import InvalidToken, TokenGuard
from tokenguard.pytest_plugin import NO_AUDIENCE, KeyRotation, TokenFactory
from tokenguard.testing import LocalIssuer

pytestmark = pytest.mark.integration


def test_plugin_is_registered_by_entry_point(pytestconfig: pytest.Config) -> None:
    """The installed entry point loads the plugin under the name ``tokenguard``."""
    assert pytestconfig.pluginmanager.get_plugin("tokenguard") is not None


def test_issuer_is_session_scoped_and_serves_http(
    tokenguard_issuer: LocalIssuer, request: pytest.FixtureRequest
) -> None:
    """The issuer is one real loopback server for the session."""
    assert tokenguard_issuer.issuer.startswith("http://127.0.0.1:")
    assert request.getfixturevalue("tokenguard_issuer") is tokenguard_issuer


def test_jwt_token_verifies_with_scopes_and_audience(
    tokenguard_token: TokenFactory, tokenguard_guard: Callable[..., TokenGuard], tokenguard_audience: str
) -> None:
    """A minted JWT verifies through discovery and JWKS, carrying the scopes and audience asked for."""
    guard = tokenguard_guard()
    claims = guard.verify_sync(tokenguard_token(["read", "write"], extra_claims={"tenant": "a"}))
    assert claims.scopes == {"read", "write"} and claims["tenant"] == "a"
    assert claims.audience == (tokenguard_audience,) and claims.token_type == "jwt"
    assert guard.verify_sync(tokenguard_token("read write")).scopes == {"read", "write"}


def test_opaque_token_goes_through_introspection(
    tokenguard_token: TokenFactory, tokenguard_guard: Callable[..., TokenGuard]
) -> None:
    """Opaque tokens are introspected; a revoked one is refused."""
    guard = tokenguard_guard()
    token = tokenguard_token.opaque("read", subject="svc")
    claims = guard.verify_sync(token)
    assert claims.token_type == "opaque" and claims.subject == "svc" and claims.scopes == {"read"}
    revoked = tokenguard_token.opaque("read")
    tokenguard_token.revoke(revoked)
    with pytest.raises(InvalidToken):
        guard.verify_sync(revoked)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"expires_in": -600}, "expired"), ({"audience": "https://other.test"}, "audience")],
)
def test_expired_and_foreign_audience_are_refused(
    tokenguard_token: TokenFactory,
    tokenguard_guard: Callable[..., TokenGuard],
    options: dict[str, object],
    message: str,
) -> None:
    """Expiry and audience are real claims the guard checks."""
    with pytest.raises(InvalidToken, match=message):
        tokenguard_guard(introspection=False).verify_sync(tokenguard_token("read", **options))  # type: ignore[arg-type]


def test_no_audience_sentinel_leaves_aud_out(tokenguard_token: TokenFactory, tokenguard_issuer: LocalIssuer) -> None:
    """``NO_AUDIENCE`` mints a token without ``aud``, which an audience-checking guard refuses."""
    import jwt

    token = tokenguard_token(audience=NO_AUDIENCE)
    assert "aud" not in jwt.decode(token, options={"verify_signature": False})


def test_header_helper(tokenguard_token: TokenFactory) -> None:
    """``header()`` gives a ready Authorization header."""
    header = tokenguard_token.header("read")
    assert list(header) == ["Authorization"] and header["Authorization"].startswith("Bearer ey")


def test_key_rotation_is_picked_up_and_restored(
    tokenguard_keys: KeyRotation,
    tokenguard_token: TokenFactory,
    tokenguard_guard: Callable[..., TokenGuard],
    tokenguard_issuer: LocalIssuer,
) -> None:
    """A rotated key signs new tokens, a guard refetches the JWKS for it; keys are restored."""
    guard = tokenguard_guard(introspection=False)
    before = tokenguard_token("read")
    assert guard.verify_sync(before).scopes == {"read"}
    old_kid = tokenguard_issuer.key(tokenguard_issuer.default_alg).kid
    new = tokenguard_keys.rotate()
    after = tokenguard_token("read")
    import jwt

    assert jwt.get_unverified_header(after)["kid"] == new.kid != old_kid
    assert guard.verify_sync(after).scopes == {"read"}
    tokenguard_keys.withdraw(new.kid)
    assert new.kid not in {k["kid"] for k in tokenguard_issuer.jwks()["keys"]}
    tokenguard_keys.restore()
    assert tokenguard_issuer.key(tokenguard_issuer.default_alg).kid == old_kid


def test_issue_refuses_unknown_keywords(tokenguard_issuer: LocalIssuer) -> None:
    """A misspelt keyword (``scopes=``) is a TypeError, not a silent extra claim."""
    with pytest.raises(TypeError, match="scopes"):
        tokenguard_issuer.issue(scopes="read")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="scopes"):
        tokenguard_issuer.issue_opaque(scopes="read")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="extra_claims"):
        tokenguard_issuer.issue(extra_claims="tenant")  # type: ignore[arg-type]
    import jwt

    token = tokenguard_issuer.issue(scope="read", extra_claims={"scopes": "kept as asked"})
    assert jwt.decode(token, options={"verify_signature": False})["scopes"] == "kept as asked"


def test_plugin_works_in_a_fresh_test_suite(pytester: pytest.Pytester) -> None:
    """In another project's suite (no conftest), the fixtures exist and the ini audience applies."""
    pytester.makeini("[pytest]\ntokenguard_audience = https://books.test\n")
    pytester.makepyfile(
        """
        def test_it(tokenguard_token, tokenguard_guard):
            claims = tokenguard_guard().verify_sync(tokenguard_token("read"))
            assert claims.audience == ("https://books.test",)
        """
    )
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(passed=1)
