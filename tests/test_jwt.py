"""Local JWT verification: claims, leeway at the boundary, keys, algorithms."""

from __future__ import annotations

from typing import Any

import pytest

from tokenguard import InvalidToken, TokenGuard, VerificationKey
from tokenguard.errors import ConfigurationError
from tokenguard.jwt import JWTPolicy, parse_jws, verify_jws
from tokenguard.keys import KeySet, parse_jwk, parse_jwks

from .helpers import AUD, EC_KEY, ED_KEY, HMAC_SECRET, ISS, NOW, RSA_KEY, claims, jwk_of, sign

KEYS = KeySet.of(
    [
        parse_jwk(jwk_of(RSA_KEY, "k1")),
        parse_jwk(jwk_of(EC_KEY, "k1")),
        parse_jwk(jwk_of(ED_KEY, "k1")),
    ]
)
POLICY = JWTPolicy(issuer=ISS, audiences=(AUD,))


def verify(token: str, policy: JWTPolicy = POLICY, now: float = NOW, keys: KeySet = KEYS) -> Any:
    return verify_jws(parse_jws(token), keys, policy, now)[0]


@pytest.mark.parametrize(
    ("key", "alg"), [(RSA_KEY, "RS256"), (RSA_KEY, "PS256"), (RSA_KEY, "RS512"), (EC_KEY, "ES256"), (ED_KEY, "EdDSA")]
)
def test_each_algorithm_verifies(key: Any, alg: str) -> None:
    """Tokens signed with each supported asymmetric algorithm verify."""
    result = verify(sign(claims(), key, alg))
    assert result.subject == "user"
    assert result.scopes == {"read"}


def test_leeway_boundary_on_exp() -> None:
    """exp + leeway is the first rejected instant; one second earlier passes."""
    token = sign(claims(exp=int(NOW)))
    policy = JWTPolicy(issuer=ISS, audiences=(AUD,), leeway=60)
    assert verify(token, policy, now=NOW + 59).subject == "user"
    with pytest.raises(InvalidToken, match="expired"):
        verify(token, policy, now=NOW + 60)


def test_leeway_boundary_on_nbf() -> None:
    """nbf - leeway is the first accepted instant."""
    token = sign(claims(nbf=int(NOW) + 100))
    policy = JWTPolicy(issuer=ISS, audiences=(AUD,), leeway=60)
    assert verify(token, policy, now=NOW + 40).subject == "user"
    with pytest.raises(InvalidToken, match="not yet valid"):
        verify(token, policy, now=NOW + 39)


def test_iat_in_the_future_is_rejected() -> None:
    """A token issued beyond the leeway in the future is refused."""
    with pytest.raises(InvalidToken, match="future"):
        verify(sign(claims(iat=int(NOW) + 61)))
    assert verify(sign(claims(iat=int(NOW) + 60))).subject == "user"


def test_max_token_age() -> None:
    """max_token_age bounds how old iat may be."""
    policy = JWTPolicy(issuer=ISS, audiences=(AUD,), leeway=0, max_token_age=100)
    assert verify(sign(claims(iat=int(NOW) - 100)), policy)
    with pytest.raises(InvalidToken, match="too old"):
        verify(sign(claims(iat=int(NOW) - 101)), policy)


def test_missing_exp_rejected_by_default() -> None:
    """exp is required unless configured otherwise."""
    with pytest.raises(InvalidToken, match="no expiry"):
        verify(sign(claims(exp=None)))
    policy = JWTPolicy(issuer=ISS, audiences=(AUD,), require_exp=False)
    assert verify(sign(claims(exp=None)), policy).subject == "user"


@pytest.mark.parametrize("aud", [AUD, [AUD], ["other", AUD]])
def test_audience_any_of(aud: Any) -> None:
    """One matching audience suffices, string or array."""
    assert verify(sign(claims(aud=aud))).audience


@pytest.mark.parametrize(
    "aud", ["other", [], [[AUD]], AUD + "/", AUD[:-1], [AUD + "x"], None, 1, {"aud": AUD}, [AUD, 1]]
)
def test_audience_mismatch(aud: Any) -> None:
    """Exact comparison only: no substrings, no trailing-slash tolerance, no nesting."""
    with pytest.raises(InvalidToken, match="audience"):
        verify(sign(claims(aud=aud)))


@pytest.mark.parametrize("iss", ["https://issuer.test/", "https://ISSUER.test", "https://issuer.test.evil", None])
def test_issuer_must_match_exactly(iss: Any) -> None:
    """iss compares as an exact string."""
    with pytest.raises(InvalidToken, match="issuer"):
        verify(sign(claims(iss=iss)))


def test_audience_check_can_be_disabled_explicitly() -> None:
    """audiences=None skips the check."""
    assert verify(sign(claims(aud="anything")), JWTPolicy(issuer=ISS, audiences=None))


def test_required_claims() -> None:
    """Configured claims must be present."""
    policy = JWTPolicy(issuer=ISS, audiences=(AUD,), required_claims=("client_id",))
    with pytest.raises(InvalidToken, match="client_id"):
        verify(sign(claims()), policy)
    assert verify(sign(claims(client_id="c")), policy).client_id == "c"


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt"])
def test_typ_at_jwt_accepted(typ: str) -> None:
    """RFC 9068 typ values are compared case-insensitively, with or without application/."""
    policy = JWTPolicy(issuer=ISS, audiences=(AUD,), token_types=("at+jwt",))
    assert verify(sign(claims(), headers={"typ": typ}), policy)


@pytest.mark.parametrize("typ", ["JWT", None, "id_token+jwt", 5])
def test_typ_mismatch_rejected(typ: Any) -> None:
    """With at+jwt required, ID tokens (typ JWT) and missing typ are refused."""
    policy = JWTPolicy(issuer=ISS, audiences=(AUD,), token_types=("at+jwt",))
    headers = {"typ": typ} if typ is not None else {}
    token = sign(claims(), headers=headers)
    if typ is None:
        token = sign(claims(), headers={"typ": None})
    with pytest.raises(InvalidToken, match="type"):
        verify(token, policy)


def test_unknown_kid_and_bad_signature_differ() -> None:
    """An unknown kid and a wrong signature give distinct, non-leaking reasons."""
    with pytest.raises(InvalidToken, match="unknown signing key"):
        verify(sign(claims(), headers={"kid": "nope"}))
    other = sign(claims(), key=EC_KEY, alg="ES256")
    head, payload, _ = other.split(".")
    forged = ".".join([head, sign(claims(sub="admin"), key=EC_KEY, alg="ES256").split(".")[1], other.split(".")[2]])
    with pytest.raises(InvalidToken, match="signature verification failed"):
        verify(forged)


def test_no_kid_tries_all_compatible_keys() -> None:
    """A token without kid verifies against any key of the right type."""
    import jwt as pyjwt

    token = pyjwt.encode(claims(), EC_KEY, algorithm="ES256")
    assert verify(token).subject == "user"


def test_jwk_alg_restricts_key() -> None:
    """A JWK with alg RS256 cannot verify a PS256 token."""
    keys = KeySet.of([parse_jwk(jwk_of(RSA_KEY, "k1", alg="RS256"))])
    with pytest.raises(InvalidToken):
        verify(sign(claims(), alg="PS256"), keys=keys)


@pytest.mark.parametrize(
    "jwk_changes",
    [
        {"use": "enc"},
        {"key_ops": ["encrypt"]},
        {"alg": "HS256"},
        {"alg": "none"},
        {"kid": 5},
        {"kty": "XYZ"},
        {"n": "!!"},
    ],
)
def test_unusable_jwks_are_refused(jwk_changes: dict[str, Any]) -> None:
    """Keys for encryption, with a foreign alg, or malformed, are not used."""
    jwk = {**jwk_of(RSA_KEY), **jwk_changes}
    with pytest.raises(ValueError):
        parse_jwk(jwk)


def test_jwks_skips_bad_keys_and_keeps_good_ones() -> None:
    """One bad key in a JWK Set does not poison the others."""
    keys, skipped = parse_jwks({"keys": [{"kty": "RSA", "kid": "bad", "n": "x"}, jwk_of(EC_KEY, "good"), "junk"]})
    assert keys.has_kid("good") and not keys.has_kid("bad")
    assert len(skipped) == 2
    assert all("BEGIN" not in reason for reason in skipped)


def test_symmetric_key_in_published_jwks_is_refused() -> None:
    """An oct key in a fetched JWK Set is a leak upstream, not a key to trust."""
    keys, skipped = parse_jwks({"keys": [{"kty": "oct", "k": "a" * 43, "kid": "h"}]})
    assert len(keys) == 0 and skipped


def test_small_rsa_keys_are_refused() -> None:
    """RSA keys under 2048 bits are refused (RFC 7518 §3.3)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError):
        parse_jwk(jwk_of(small))


def test_short_hmac_secret_is_refused() -> None:
    """HS256 secrets under 32 bytes are refused (RFC 7518 §3.2)."""
    with pytest.raises(ConfigurationError):
        VerificationKey.from_secret(b"short")


def test_hmac_issuer_via_from_keys() -> None:
    """An HS256-only issuer verifies with its shared secret (the DIAN case)."""
    guard = TokenGuard.from_keys(
        issuer=ISS, audience=AUD, hmac_keys={None: HMAC_SECRET}, algorithms=["HS256"], clock=lambda: NOW
    )
    import jwt as pyjwt

    token = pyjwt.encode(claims(), HMAC_SECRET, algorithm="HS256")
    assert guard.verify_sync(token).subject == "user"
    with pytest.raises(InvalidToken):
        guard.verify_sync(pyjwt.encode(claims(), b"x" * 32, algorithm="HS256"))


def test_static_pem_keys() -> None:
    """PEM public keys configure a guard with no network."""
    from cryptography.hazmat.primitives import serialization

    pem = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    guard = TokenGuard.from_keys(issuer=ISS, audience=AUD, keys=[pem], clock=lambda: NOW)
    assert guard.verify_sync(sign(claims())).subject == "user"


def test_none_algorithm_cannot_be_configured() -> None:
    """'none' in an allow-list is a configuration error."""
    with pytest.raises(ConfigurationError):
        JWTPolicy(issuer=ISS, audiences=(AUD,), algorithms=frozenset({"RS256", "none"}))


# ---------------------------------------------------------------------------- what new tokens reuse


def test_header_check_is_remembered_per_issuer_policy() -> None:
    """The same encoded header is judged by each issuer's own policy, not by what another remembered."""
    from tokenguard import JWTIssuer

    other = "https://other.test"
    guard = TokenGuard(
        [
            JWTIssuer(ISS, audience=AUD, keys=[RSA_KEY.public_key()]),
            JWTIssuer(other, audience=AUD, keys=[RSA_KEY.public_key()], token_types=["at+jwt"]),
        ],
        clock=lambda: NOW,
    )
    # pyjwt adds "typ": "JWT": one encoded header for both tokens.
    lax, strict = sign(claims()), sign(claims(iss=other))
    assert lax.split(".")[0] == strict.split(".")[0]
    for _ in range(2):  # the second round is answered from what was remembered
        assert guard.verify_sync(sign(claims(jti=str(_)))).issuer == ISS
        with pytest.raises(InvalidToken, match="wrong token type"):
            guard.verify_sync(sign(claims(iss=other, jti=str(_))))


def test_refused_header_is_refused_again() -> None:
    """A header that failed its check is not remembered as passing."""
    guard = TokenGuard.from_keys(
        issuer=ISS, audience=AUD, keys=[RSA_KEY.public_key()], algorithms=["PS256"], clock=lambda: NOW
    )
    for index in range(3):
        with pytest.raises(InvalidToken, match="algorithm not allowed"):
            guard.verify_sync(sign(claims(jti=str(index))))


def test_unknown_kids_share_one_remembered_answer() -> None:
    """KeySet remembers one answer per kid it holds and one for all others; made-up kids add nothing."""
    from tokenguard.keys import _OTHER_KID

    pem_key = VerificationKey.from_public_key(EC_KEY.public_key())  # configured without a kid
    keys = KeySet.of([parse_jwk(jwk_of(RSA_KEY, "k1")), pem_key])
    for index in range(500):
        assert keys.candidates(f"made-up-{index}", "RS256") == ()
        assert keys.candidates(f"made-up-{index}", "ES256") == (pem_key,)
    assert [key.kid for key in keys.candidates("k1", "RS256")] == ["k1"]
    assert keys.candidates("k1", "ES256") == (pem_key,)
    assert keys.candidates("k1", "RS256") is keys.candidates("k1", "RS256")
    assert set(keys._chosen) == {(_OTHER_KID, "RS256"), (_OTHER_KID, "ES256"), ("k1", "RS256"), ("k1", "ES256")}


def test_a_kid_never_gets_another_kids_keys() -> None:
    """Remembered answers are per kid: a token naming k2 is never checked with k1's key."""
    keys = KeySet.of([parse_jwk(jwk_of(RSA_KEY, "k1"))])
    assert keys.candidates("k1", "RS256")
    with pytest.raises(InvalidToken, match="unknown signing key"):
        verify(sign(claims(), headers={"kid": "k2"}), keys=keys)


def test_repeated_claim_values_are_shared_between_tokens() -> None:
    """Two tokens of one client share their iss, aud, scope and client_id strings (memory per cached token)."""
    guard = TokenGuard.from_keys(issuer=ISS, audience=AUD, keys=[RSA_KEY.public_key()], clock=lambda: NOW)
    extra = {"client_id": "client-" + "x" * 20, "scope": "read write admin", "amr": ["pwd", "otp"]}
    first = guard.verify_sync(sign(claims(jti="1", **extra)))
    second = guard.verify_sync(sign(claims(jti="2", **extra)))
    for name in ("iss", "aud", "scope", "client_id"):
        assert first[name] is second[name], name
    assert first["amr"][0] is second["amr"][0]
    assert first["jti"] == "1" and second["jti"] == "2"
    assert first.to_dict() == {**claims(jti="1", **extra)}


def test_nested_claims_survive_verification() -> None:
    """Objects and arrays inside the payload come out as dicts and lists, as sent."""
    nested = {"realm_access": {"roles": ["a", "b"]}, "act": [{"sub": "svc"}], "cnf": {"jkt": "t"}}
    result = verify(sign(claims(**nested)))
    assert result["realm_access"] == {"roles": ["a", "b"]}
    assert result["act"] == [{"sub": "svc"}]
    assert result["cnf"] == {"jkt": "t"}
