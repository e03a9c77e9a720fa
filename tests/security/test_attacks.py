"""Known attacks on JWT validators and bearer middleware: each must fail safely.

Every case asserts the outcome (InvalidToken / InvalidRequest, i.e. 401 / 400),
and where a network could be involved, that no request was made.
"""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Iterator
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenguard import InvalidToken, JWTIssuer, TokenError, TokenGuard
from tokenguard.jwt import parse_jws
from tokenguard.testing import LocalIssuer

from ..helpers import AUD, EC_KEY, ISS, NOW, RSA_KEY, b64, b64json, claims, jwk_of, sign

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551

RSA_PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
RSA_PUBLIC_DER = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
)
EC_PUBLIC_PEM = EC_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


@pytest.fixture(scope="module")
def guard() -> Iterator[TokenGuard]:
    """A guard trusting the RSA and EC test keys (static, so no network at all)."""
    jwks = {"keys": [jwk_of(RSA_KEY, "k1"), jwk_of(EC_KEY, "k1")]}
    with TokenGuard.from_keys(issuer=ISS, audience=AUD, jwks=jwks, clock=lambda: NOW) as guard:
        yield guard


def hs256(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    mac = hmac.new(secret, signing_input.encode(), "sha256").digest()
    return f"{signing_input}.{b64(mac)}"


def rejected(guard: TokenGuard, token: str) -> InvalidToken:
    with pytest.raises(InvalidToken) as info:
        guard.verify_sync(token)
    assert token not in str(info.value)
    return info.value


def test_baseline_token_passes(guard: TokenGuard) -> None:
    """The fixtures are sound: an honest token verifies."""
    assert guard.verify_sync(sign(claims())).subject == "user"


# ---------------------------------------------------------------- alg: none


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", "", None, "none "])
@pytest.mark.parametrize("signature", ["", "AAAA", "e30"])
def test_alg_none_every_spelling(guard: TokenGuard, alg: Any, signature: str) -> None:
    """alg none in any spelling, with or without a signature, is refused."""
    header = {"alg": alg, "kid": "k1"} if alg is not None else {"kid": "k1"}
    rejected(guard, f"{b64json(header)}.{b64json(claims())}.{signature}")


def test_missing_signature_segment(guard: TokenGuard) -> None:
    """A valid token with its signature stripped is refused."""
    head, payload, _ = sign(claims()).split(".")
    rejected(guard, f"{head}.{payload}.")
    rejected(guard, f"{head}.{payload}")


# ---------------------------------------------------------------- algorithm confusion


@pytest.mark.parametrize(
    "secret",
    [
        RSA_PUBLIC_PEM,
        RSA_PUBLIC_DER,
        EC_PUBLIC_PEM,
        json.dumps(jwk_of(RSA_KEY, "k1")).encode(),
        json.dumps(jwk_of(EC_KEY, "k1")).encode(),
        RSA_PUBLIC_PEM.strip(),
    ],
    ids=["rsa-pem", "rsa-der", "ec-pem", "rsa-jwk", "ec-jwk", "rsa-pem-stripped"],
)
@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_with_public_key_as_secret(guard: TokenGuard, secret: bytes, alg: str) -> None:
    """HS* tokens "signed" with the issuer's public key are refused: public keys never act as secrets."""
    header = {"alg": alg, "kid": "k1", "typ": "JWT"}
    digest = {"HS256": "sha256", "HS384": "sha384", "HS512": "sha512"}[alg]
    signing_input = f"{b64json(header)}.{b64json(claims())}"
    token = f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), digest).digest())}"
    assert "not allowed" in str(rejected(guard, token))


def test_hmac_allowed_but_key_is_rsa() -> None:
    """Even with HS256 allowed, an RSA key has no HMAC verifier."""
    jwks = {"keys": [jwk_of(RSA_KEY, "k1")]}
    with TokenGuard.from_keys(
        issuer=ISS, audience=AUD, jwks=jwks, algorithms=["RS256", "HS256"], clock=lambda: NOW
    ) as guard:
        rejected(guard, hs256({"alg": "HS256", "kid": "k1"}, claims(), RSA_PUBLIC_PEM))


def test_rs_token_against_ec_key_and_vice_versa(guard: TokenGuard) -> None:
    """A key is only used with its own algorithm family."""
    other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rejected(guard, pyjwt.encode(claims(), other_rsa, algorithm="RS256", headers={"kid": "k1"}))
    other_ec = ec.generate_private_key(ec.SECP256R1())
    rejected(guard, pyjwt.encode(claims(), other_ec, algorithm="ES256", headers={"kid": "k1"}))
    p384 = ec.generate_private_key(ec.SECP384R1())
    rejected(guard, pyjwt.encode(claims(), p384, algorithm="ES384", headers={"kid": "k1"}))


# ---------------------------------------------------------------- ECDSA signature shapes


def es256_parts() -> tuple[str, int, int]:
    token = sign(claims(), EC_KEY, "ES256")
    head, payload, sig = token.split(".")
    raw = base64.urlsafe_b64decode(sig + "==")
    return f"{head}.{payload}", int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")


@pytest.mark.parametrize(
    ("r", "s"),
    [(0, 0), (0, 1), (1, 0), (P256_ORDER, 1), (1, P256_ORDER), (P256_ORDER + 1, 1)],
    ids=["zero-zero", "r-zero", "s-zero", "r-equals-n", "s-equals-n", "r-above-n"],
)
def test_psychic_signatures(guard: TokenGuard, r: int, s: int) -> None:
    """r or s equal to 0 or out of [1, n-1] (CVE-2022-21449) are refused."""
    signing_input, _, _ = es256_parts()
    size = 32 if max(r, s) < 2**256 else 33
    sig = r.to_bytes(size, "big")[-32:] + s.to_bytes(size, "big")[-32:]
    if max(r, s) >= 2**256:
        pytest.skip("does not fit in 32 bytes")
    rejected(guard, f"{signing_input}.{b64(sig)}")


def test_ecdsa_wrong_length_and_der(guard: TokenGuard) -> None:
    """Truncated, extended and DER-encoded ECDSA signatures are refused."""
    signing_input, r, s = es256_parts()
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert guard.verify_sync(f"{signing_input}.{b64(raw)}").subject == "user"
    for bad in (raw[:-1], raw + b"\x00", b"\x00" + raw, raw[:32]):
        rejected(guard, f"{signing_input}.{b64(bad)}")
    der = EC_KEY.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    assert decode_dss_signature(der)
    rejected(guard, f"{signing_input}.{b64(der)}")


def test_ecdsa_high_s_is_accepted_as_per_rfc(guard: TokenGuard) -> None:
    """JWS does not require low-S: (r, n - s) is a valid signature too, not a crash."""
    signing_input, r, s = es256_parts()
    flipped = r.to_bytes(32, "big") + (P256_ORDER - s).to_bytes(32, "big")
    assert guard.verify_sync(f"{signing_input}.{b64(flipped)}").subject == "user"


# ---------------------------------------------------------------- header injection


ATTACKER = ec.generate_private_key(ec.SECP256R1())


@pytest.mark.parametrize(
    "header",
    [
        {"jku": "{attacker}/jwks"},
        {"x5u": "{attacker}/cert.pem"},
        {"jwk": jwk_of(ATTACKER, "k1")},
        {"x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"]},
        {"jku": "{attacker}/jwks", "kid": "attacker"},
    ],
)
def test_embedded_key_references_are_never_used_or_fetched(header: dict[str, Any]) -> None:
    """Tokens signed by an attacker who names their key in the header are refused, offline."""
    with LocalIssuer(algorithms=("ES256",)) as issuer, LocalIssuer(algorithms=("ES256",)) as attacker:
        filled = {k: (v.format(attacker=attacker.issuer) if isinstance(v, str) else v) for k, v in header.items()}
        guard = issuer.guard(introspection=False)
        guard.verify_sync(issuer.issue(alg="ES256"))  # keys loaded
        token = pyjwt.encode(
            issuer.claims(), ATTACKER, algorithm="ES256", headers={"kid": issuer.key("ES256").kid, **filled}
        )
        with pytest.raises(InvalidToken):
            guard.verify_sync(token)
        assert sum(attacker.requests.values()) == 0


@pytest.mark.parametrize(
    "kid",
    [
        "../../../../etc/passwd",
        "' OR '1'='1",
        "k1; rm -rf /",
        "$(reboot)",
        "k1\x00",
        "k" * 10_000,
        "\u202ek1",
    ],
)
def test_hostile_kid_strings(guard: TokenGuard, kid: str) -> None:
    """kid values are opaque lookup keys: traversal or injection strings simply match nothing."""
    error = rejected(guard, sign(claims(), headers={"kid": kid}))
    assert kid not in error.description


@pytest.mark.parametrize("kid", [1, 1.5, True, None, [], ["k1"], {"kid": "k1"}])
def test_non_string_kid(guard: TokenGuard, kid: Any) -> None:
    """Non-string kids are malformed (null means no kid, which then must still verify)."""
    token = f"{b64json({'alg': 'RS256', 'kid': kid})}.{b64json(claims())}.{b64(b'x' * 256)}"
    rejected(guard, token)


@pytest.mark.parametrize(
    "extra",
    [
        {"crit": ["exp"]},
        {"crit": ["b64"], "b64": False},
        {"b64": False},
        {"crit": []},
        {"crit": "nope"},
        {"zip": "DEF"},
    ],
)
def test_crit_b64_and_zip_are_refused(guard: TokenGuard, extra: dict[str, Any]) -> None:
    """Unsupported critical extensions, unencoded payloads and compression are refused."""
    rejected(guard, sign(claims(), headers=extra))


# ---------------------------------------------------------------- claims


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": int(NOW) - 61}, "expired"),
        ({"nbf": int(NOW) + 3600}, "not yet valid"),
        ({"iat": int(NOW) + 86400 * 365}, "future"),
        ({"exp": None}, "no expiry"),
        ({"exp": "2000000000"}, "exp"),
        ({"exp": True}, "exp"),
        ({"exp": [2000000000]}, "exp"),
        ({"exp": {"$gt": 0}}, "exp"),
        ({"nbf": "0"}, "nbf"),
        ({"iat": False}, "iat"),
        ({"exp": 1e400}, "exp"),
        ({"exp": 10**400}, "exp"),  # an int no float holds: must not overflow into a crash
        ({"nbf": -(10**30)}, "nbf"),
        ({"iat": 2**53 + 1}, "iat"),
        ({"aud": []}, "audience"),
        ({"aud": [[AUD]]}, "audience"),
        ({"aud": AUD + ".evil.com"}, "audience"),
        ({"aud": AUD[:-1]}, "audience"),
        ({"aud": {"0": AUD}}, "audience"),
        ({"iss": ISS + "/"}, "issuer"),
        ({"iss": [ISS]}, "issuer"),
        ({"sub": 123}, "sub"),
    ],
)
def test_claim_attacks(guard: TokenGuard, overrides: dict[str, Any], reason: str) -> None:
    """Expired, early, future, untyped and lookalike claims are refused with a matching reason."""
    payload = claims()
    for name, value in overrides.items():
        if value is None:
            payload.pop(name)
        else:
            payload[name] = value
    # Signed by hand: PyJWT refuses to encode several of these, and JSON has no infinity.
    raw = json.dumps(payload).replace("Infinity", "1e400").encode()
    with pytest.raises(InvalidToken) as info:
        parse_and_verify(guard, b'{"alg":"RS256","kid":"k1"}', raw)
    assert reason in info.value.description


def test_tenant_confusion_with_shared_keys() -> None:
    """Two tenants sharing keys: a token for tenant A never passes as tenant B's."""
    jwks = {"keys": [jwk_of(RSA_KEY, "k1")]}
    tenant_a = JWTIssuer("https://idp.test/tenant-a", audience="api-a", jwks=jwks)
    tenant_b = JWTIssuer("https://idp.test/tenant-b", audience="api-b", jwks=jwks)
    with TokenGuard([tenant_a, tenant_b], clock=lambda: NOW) as guard:
        token_a = sign(claims(iss="https://idp.test/tenant-a", aud="api-a"))
        assert guard.verify_sync(token_a).issuer == "https://idp.test/tenant-a"
        # Same keys, B's issuer, A's audience: B's policy refuses it.
        with pytest.raises(InvalidToken, match="audience"):
            guard.verify_sync(sign(claims(iss="https://idp.test/tenant-b", aud="api-a")))


def test_id_token_presented_as_access_token() -> None:
    """With at+jwt required, an ID token (typ JWT, aud = client) is refused."""
    jwks = {"keys": [jwk_of(RSA_KEY, "k1")]}
    with TokenGuard.from_keys(issuer=ISS, audience=AUD, jwks=jwks, token_types=["at+jwt"], clock=lambda: NOW) as guard:
        id_token = sign(claims(nonce="n", at_hash="x"), headers={"typ": "JWT"})
        with pytest.raises(InvalidToken, match="type"):
            guard.verify_sync(id_token)
        assert guard.verify_sync(sign(claims(), headers={"typ": "at+jwt"})).subject == "user"


# ---------------------------------------------------------------- structure


def _valid_parts() -> list[str]:
    return sign(claims()).split(".")


@pytest.mark.parametrize(
    "build",
    [
        lambda h, p, s: f"{h}.{p}",
        lambda h, p, s: f"{h}.{p}.{s}.{s}",
        lambda h, p, s: f"{h}.{p}.{s}.x.y",
        lambda h, p, s: f"{h}..{p}.{s}.x",
        lambda h, p, s: f"{h}.{p}.{s}=",
        lambda h, p, s: f"{h}=.{p}.{s}",
        lambda h, p, s: f"{h}.{p}==.{s}",
        lambda h, p, s: f"{h}.{p}.{s[:-1]}",
        lambda h, p, s: f"{h}.{p}.{s} ",
        lambda h, p, s: f" {h}.{p}.{s}",
        lambda h, p, s: f"{h}.{p} .{s}",
        lambda h, p, s: f"{h}.{p.replace('e', '+', 1)}.{s}",
        lambda h, p, s: f"{h}.{p.replace('e', '/', 1)}.{s}",
        lambda h, p, s: f"{h}.{p}.{s.replace('_', '/').replace('-', '+')}",
        lambda h, p, s: f"{h}.{p}!.{s}",
        lambda h, p, s: f"{h}.{p}.{s}\n",
        lambda h, p, s: "",
        lambda h, p, s: "..",
        lambda h, p, s: f".{p}.{s}",
    ],
)
def test_structural_damage(guard: TokenGuard, build: Any) -> None:
    """Wrong segment counts, padding, whitespace and non-base64url characters are refused."""
    token = build(*_valid_parts())
    with pytest.raises(TokenError):
        guard.verify_sync(token)


def test_non_canonical_base64_is_refused(guard: TokenGuard) -> None:
    """A signature whose last character differs only in unused bits is not the same token."""
    h, p, s = _valid_parts()
    # 256-byte RSA signature: 342 chars, the last carries 4 unused bits.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = s[:-1] + alphabet[alphabet.index(s[-1]) ^ 1]
    assert base64.urlsafe_b64decode(twin + "==") == base64.urlsafe_b64decode(s + "==")
    rejected(guard, f"{h}.{p}.{twin}")


@pytest.mark.parametrize(
    ("header_json", "payload_json"),
    [
        ('{"alg":"RS256","alg":"none","kid":"k1"}', None),
        (None, '{"sub":"user","sub":"admin"}'),
        (None, '{"sub":"user","cnf":{"jkt":"a","jkt":"b"}}'),
        (None, '{"sub":"user","act":[{"sub":"a","sub":"b"}]}'),
        (None, "[1,2,3]"),
        (None, '"a string"'),
        (None, "42"),
        (None, "null"),
        ('["RS256"]', None),
        (None, "[" * 100_000 + "]" * 100_000),
        (None, '{"a":' * 5000 + "1" + "}" * 5000),
        (None, '{"exp": NaN}'),
        (None, '{"exp": Infinity}'),
    ],
)
def test_hostile_json(guard: TokenGuard, header_json: str | None, payload_json: str | None) -> None:
    """Duplicate members, non-objects, deep nesting and NaN are refused without crashing."""
    header = header_json or '{"alg":"RS256","kid":"k1"}'
    payload = payload_json or json.dumps(claims())
    with pytest.raises(InvalidToken):
        parse_and_verify(guard, header.encode(), payload.encode())


def parse_and_verify(guard: TokenGuard, header: bytes, payload: bytes) -> Any:
    from cryptography.hazmat.primitives.asymmetric import padding

    signing_input = f"{b64(header)}.{b64(payload)}"
    sig = RSA_KEY.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    token = f"{signing_input}.{b64(sig)}"
    if len(token) > guard.max_token_bytes:
        guard = TokenGuard.from_keys(
            issuer=ISS, audience=AUD, jwks={"keys": [jwk_of(RSA_KEY, "k1")]}, max_token_bytes=10**7
        )
    return guard.verify_sync(token)


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xfe" + json.dumps(claims()).encode("utf-16-le"),
        json.dumps(claims()).encode("utf-16"),
        json.dumps(claims()).encode("utf-32"),
        b'{"sub":"\xc3\x28"}',
        b'{"sub":"\xed\xa0\x80"}',
    ],
)
def test_non_utf8_payloads(guard: TokenGuard, payload: bytes) -> None:
    """UTF-16/32 and invalid UTF-8 payloads are refused, even when correctly signed."""
    with pytest.raises(InvalidToken):
        parse_and_verify(guard, b'{"alg":"RS256","kid":"k1"}', payload)


def test_oversized_token_refused_before_parsing(guard: TokenGuard) -> None:
    """A token over max_token_bytes is refused by size alone."""
    huge = sign(claims(pad="x" * 10_000))
    assert "maximum size" in str(rejected(guard, huge))


def test_jwe_is_not_a_jws(guard: TokenGuard) -> None:
    """A five-segment JWE where a JWS is expected is refused."""
    jwe = ".".join([b64json({"alg": "RSA-OAEP", "enc": "A256GCM"}), "a", "b", "c", "d"])
    rejected(guard, jwe)


# ---------------------------------------------------------------- introspection


def test_introspection_sends_exactly_the_token() -> None:
    """The provider receives the presented token byte for byte; extra fields cannot be injected."""
    with LocalIssuer(algorithms=("ES256",)) as issuer:
        guard = issuer.guard()
        hostile = "abc&token=other&client_id=evil&active=true"
        with pytest.raises(InvalidToken):
            guard.verify_sync(hostile)
        sent = issuer.introspection_requests[-1]
        assert sent["token"] == hostile
        assert sent.get("client_id") is None  # Basic auth: no injected client_id


# ---------------------------------------------------------------- timing


def test_hmac_comparison_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """HMAC signatures are compared with hmac.compare_digest."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("tokenguard.keys.hmac.compare_digest", spy)
    secret = b"s" * 32
    with TokenGuard.from_keys(issuer=ISS, audience=AUD, hmac_keys={None: secret}, clock=lambda: NOW) as guard:
        assert guard.verify_sync(pyjwt.encode(claims(), secret, algorithm="HS256")).subject == "user"
    assert calls


# ---------------------------------------------------------------- properties


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=400))
def test_any_string_is_verified_or_refused(guard: TokenGuard, token: str) -> None:
    """Whatever the input, verify_sync returns claims or raises a TokenError: nothing else."""
    try:
        guard.verify_sync(token)
    except TokenError:
        return
    raise AssertionError("a random string verified")


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_single_character_change_is_refused(guard: TokenGuard, data: st.DataObject) -> None:
    """Changing any one character of a valid token makes it fail (canonical encoding, signed bytes)."""
    token = sign(claims())
    index = data.draw(st.integers(0, len(token) - 1))
    replacement = data.draw(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ "))
    if token[index] == replacement:
        return
    mutated = token[:index] + replacement + token[index + 1 :]
    with pytest.raises(TokenError):
        guard.verify_sync(mutated)


@given(st.binary(max_size=300), st.binary(max_size=300), st.binary(max_size=80))
def test_jws_parser_on_random_segments(header: bytes, payload: bytes, signature: bytes) -> None:
    """The structure parser accepts or raises InvalidToken for any segment contents."""
    try:
        parse_jws(f"{b64(header)}.{b64(payload)}.{b64(signature)}")
    except InvalidToken:
        pass


def test_far_future_exp_in_a_genuine_token_does_not_crash_datetimes(guard: TokenGuard) -> None:
    """A trusted issuer may sign exp in the year 30000; the claims still render as datetimes."""
    token = sign(claims(exp=2**50, iat=int(NOW)))
    verified = guard.verify_sync(token)
    assert verified.expires_at is not None and verified.expires_at.year == 9999
    assert verified.issued_at is not None and verified.issued_at.year == 2027
