"""Pure parts of DPoP, replay, nonces, step-up, certificate binding and RFC 9728, without a network."""

from __future__ import annotations

import base64
import json
import time
import uuid
import warnings
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwk, jwt
from joserfc.errors import SecurityWarning

from tokenguard import ConfigurationError, InvalidToken, MissingToken, ServiceUnavailable, TokenClaims
from tokenguard.challenge import parse_challenges
from tokenguard.dpop import (
    DPoPSettings,
    InvalidDPoPProof,
    access_token_hash,
    check_proof,
    jwk_thumbprint,
    normalize_htu,
    single_proof,
)
from tokenguard.errors import InvalidRequest, TokenError
from tokenguard.forwarded import TrustedProxies, request_url
from tokenguard.mtls import MTLSSettings, certificate_thumbprint, check_certificate_binding, load_certificate
from tokenguard.nonce import DPoPNonces
from tokenguard.replay import MemoryReplayStore, replay_key
from tokenguard.request_auth import challenge_headers
from tokenguard.resource_metadata import ProtectedResourceMetadata, metadata_paths, metadata_url
from tokenguard.stepup import InsufficientUserAuthentication, StepUpRequirement

URL = "https://api.test/books"
TOKEN = "access-token-value"
NOW = time.time()
EC = jwk.ECKey.generate_key("P-256")


def make_proof(key: Any = EC, alg: str = "ES256", header: dict[str, Any] | None = None, **claims: Any) -> str:
    payload: dict[str, Any] = {
        "jti": uuid.uuid4().hex,
        "htm": "GET",
        "htu": URL,
        "iat": int(NOW),
        "ath": access_token_hash(TOKEN),
    }
    payload.update(claims)
    protected = {"typ": "dpop+jwt", "alg": alg, "jwk": key.as_dict(private=False)}
    protected.update(header or {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)
        return jwt.encode(protected, payload, key, algorithms=[alg])


def check(proof: str, **overrides: Any) -> Any:
    options: dict[str, Any] = {
        "method": "GET",
        "url": URL,
        "access_token": TOKEN,
        "now": NOW,
        "settings": DPoPSettings(),
    }
    options.update(overrides)
    return check_proof(proof, **options)


# ---------------------------------------------------------------- proofs


def test_valid_proof_and_thumbprint_agree_with_joserfc() -> None:
    """A joserfc proof passes; our RFC 7638 thumbprint equals joserfc's for EC, OKP and RSA keys."""
    for key, alg in (
        (EC, "ES256"),
        (jwk.OKPKey.generate_key("Ed25519"), "EdDSA"),
        (jwk.RSAKey.generate_key(2048), "PS256"),
    ):
        result = check(make_proof(key, alg))
        assert result.jkt == key.thumbprint()
        assert jwk_thumbprint(key.as_dict(private=False)) == key.thumbprint()


@pytest.mark.parametrize(
    ("header", "claims", "message"),
    [
        ({"typ": "JWT"}, {}, "typ"),
        ({"typ": "application/dpop+jwt"}, {}, "typ"),
        ({"crit": ["kid"], "kid": "k"}, {}, "critical"),
        ({}, {"htm": "get"}, "htm"),
        ({}, {"htu": "https://api.test/other"}, "htu"),
        ({}, {"htu": "https://evil.test/books"}, "htu"),
        ({}, {"htu": "not a url"}, "htu"),
        ({}, {"htu": "https://user@api.test/books"}, "htu"),
        ({}, {"iat": int(NOW) - 301}, "too old"),
        ({}, {"iat": int(NOW) + 30}, "future"),
        ({}, {"iat": "now"}, "iat"),
        ({}, {"iat": True}, "iat"),
        ({}, {"jti": ""}, "jti"),
        ({}, {"jti": "x" * 257}, "jti"),
        ({}, {"ath": access_token_hash("other")}, "ath"),
        ({}, {"ath": 5}, "ath"),
        ({}, {"nonce": 5}, "nonce"),
    ],
)
def test_bad_proofs(header: dict[str, Any], claims: dict[str, Any], message: str) -> None:
    """Each broken header or claim is InvalidDPoPProof naming what is wrong."""
    with pytest.raises(InvalidDPoPProof, match=message):
        check(make_proof(header=header, **claims))


def test_private_key_in_jwk_refused() -> None:
    """A proof carrying the private key (d) is refused: the jwk must be public (RFC 9449 §4.3 check 7)."""
    header = {"jwk": EC.as_dict(private=True)}
    with pytest.raises(InvalidDPoPProof, match="public"):
        check(make_proof(header=header))


def test_algorithms_outside_allow_list_refused() -> None:
    """HS256 is refused with a config error, and an allowed but unlisted alg on a proof is refused."""
    with pytest.raises(ConfigurationError, match="asymmetric"):
        DPoPSettings(algorithms=("HS256",))
    with pytest.raises(InvalidDPoPProof, match="alg not allowed"):
        check(make_proof(), settings=DPoPSettings(algorithms=("PS256",)))


def test_alg_must_fit_the_key() -> None:
    """A proof whose alg does not fit its jwk (RS256 header, EC key) is refused."""
    proof = make_proof()
    head, body, sig = proof.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    header["alg"] = "RS256"
    forged = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidDPoPProof):
        check(f"{forged}.{body}.{sig}")


def test_tampered_signature_refused() -> None:
    """Changing the payload after signing breaks the signature."""
    other = make_proof(htm="POST")
    head, _, sig = make_proof().split(".")
    with pytest.raises(InvalidDPoPProof, match="signature"):
        check(f"{head}.{other.split('.')[1]}.{sig}", method="POST")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_garbage_proofs_never_crash(value: str) -> None:
    """Any header value either passes or raises InvalidDPoPProof; nothing else escapes."""
    with pytest.raises(InvalidDPoPProof):
        check(value)


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["jti", "htm", "htu", "iat", "ath", "nonce", "x"]),
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=40)),
    )
)
def test_signed_hostile_claims_never_crash(claims: dict[str, Any]) -> None:
    """Validly signed proofs with hostile claim values pass or raise InvalidDPoPProof."""
    payload = {"jti": "a", "htm": "GET", "htu": URL, "iat": int(NOW), "ath": access_token_hash(TOKEN)}
    payload.update(claims)
    proof = jwt.encode({"typ": "dpop+jwt", "alg": "ES256", "jwk": EC.as_dict(private=False)}, payload, EC)
    try:
        check(proof)
    except InvalidDPoPProof:
        pass


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("https://API.test/books", "https://api.test/books"),
        ("HTTPS://api.test:443/books", "https://api.test/books"),
        ("http://api.test:80", "http://api.test/"),
        ("https://api.test/a/./b/../books", "https://api.test/a/books"),
        ("https://api.test/%7Euser", "https://api.test/~user"),
        ("https://api.test/a%2fb", "https://api.test/a%2Fb"),
        ("https://api.test/books?x=1#f", "https://api.test/books"),
        ("https://[::1]:8443/x", "https://[::1]:8443/x"),
    ],
)
def test_htu_normalisation(a: str, b: str) -> None:
    """RFC 3986 §6.2.2-6.2.3 spellings of one URI normalise alike."""
    assert normalize_htu(a) == normalize_htu(b)


@pytest.mark.parametrize(
    "uri", ["ftp://api.test/", "/books", "https://", "https://u:p@api.test/", "https://api.test:99999/", "https://a b/"]
)
def test_htu_refused(uri: str) -> None:
    """Non-http(s), relative, userinfo, bad ports and spaces are not URIs we compare."""
    with pytest.raises(ValueError):
        normalize_htu(uri)


def test_single_proof() -> None:
    """Zero proofs is None; two fields or a comma list is invalid_request."""
    assert single_proof([]) is None
    assert single_proof(["a.b.c"]) == "a.b.c"
    for values in (["a.b.c", "d.e.f"], ["a.b.c, d.e.f"]):
        with pytest.raises(InvalidRequest):
            single_proof(values)


def test_dpop_settings_validated() -> None:
    """Modes, bare strings and windows are checked at construction."""
    with pytest.raises(ConfigurationError, match="mode"):
        DPoPSettings(mode="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not a string"):
        DPoPSettings(algorithms="ES256")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_age"):
        DPoPSettings(max_age=0)


# ---------------------------------------------------------------- replay and nonces


def test_memory_replay_store_detects_replays_and_expires() -> None:
    """A key is refused while live, accepted again once expired."""
    store = MemoryReplayStore()
    key = replay_key("jkt", "jti")
    assert store.add_sync(key, 100.0, 0.0)
    assert not store.add_sync(key, 100.0, 50.0)
    assert store.add_sync(key, 200.0, 100.0)


def test_memory_replay_store_fails_closed_when_full() -> None:
    """At capacity a new proof is 503, not accepted unchecked; expiry frees room."""
    store = MemoryReplayStore(max_entries=2)
    assert store.add_sync("a", 10.0, 0.0)
    assert store.add_sync("b", 20.0, 0.0)
    with pytest.raises(ServiceUnavailable):
        store.add_sync("c", 30.0, 1.0)
    assert store.add_sync("c", 30.0, 10.0)  # "a" expired
    assert len(store) == 2


def test_replay_keys_bound_to_key() -> None:
    """The same jti under two proof keys are two entries: clients cannot burn each other's jti."""
    assert replay_key("k1", "j") != replay_key("k2", "j")


def test_nonces_rotate() -> None:
    """A nonce is valid in its window and the next, then not; other secrets' nonces never."""
    nonces = DPoPNonces(b"s" * 32, lifetime=60)
    nonce = nonces.current(1000.0)
    assert nonces.is_valid(nonce, 1000.0)
    assert nonces.is_valid(nonce, 1060.0)
    assert not nonces.is_valid(nonce, 1140.0)
    assert not DPoPNonces(b"t" * 32, lifetime=60).is_valid(nonce, 1000.0)
    assert not nonces.is_valid("garbage\u2028", 1000.0)
    assert "ssss" not in repr(nonces)
    with pytest.raises(ConfigurationError):
        DPoPNonces(b"short")


# ---------------------------------------------------------------- challenges


def test_challenges_side_by_side() -> None:
    """No credentials: bare Bearer and DPoP challenges; DPoP errors go on DPoP; 503 has none."""
    dpop = DPoPSettings()
    headers = dict(challenge_headers(MissingToken(), dpop, "api", include_description=True, extra=()))
    challenges = {c.scheme: c for c in parse_challenges(headers["WWW-Authenticate"])}
    assert challenges["Bearer"].error is None and challenges["DPoP"].error is None
    assert dict(challenges["DPoP"].extra)["algs"] == " ".join(dpop.algorithms)
    headers = dict(
        challenge_headers(
            InvalidDPoPProof("bad"), dpop, "api", include_description=True, extra=(("resource_metadata", "u"),)
        )
    )
    challenges = {c.scheme: c for c in parse_challenges(headers["WWW-Authenticate"])}
    assert challenges["DPoP"].error == "invalid_dpop_proof"
    assert dict(challenges["DPoP"].extra)["resource_metadata"] == "u"
    assert dict(challenges["Bearer"].extra)["resource_metadata"] == "u"
    assert headers["Cache-Control"] == "no-store"
    assert "WWW-Authenticate" not in dict(
        challenge_headers(ServiceUnavailable(), dpop, "api", include_description=True, extra=())
    )


# ---------------------------------------------------------------- step-up


def claims(**values: Any) -> TokenClaims:
    return TokenClaims({"sub": "u", **values}, token_type="jwt")


def test_step_up() -> None:
    """acr outside the list, an old auth_time or none at all: insufficient_user_authentication."""
    requirement = StepUpRequirement(("urn:mfa", "urn:hw"), 300)
    requirement.check(claims(acr="urn:mfa", auth_time=NOW - 10), NOW)
    for bad in (
        claims(acr="urn:pwd", auth_time=NOW),
        claims(acr="urn:mfa", auth_time=NOW - 301),
        claims(acr="urn:mfa"),
    ):
        with pytest.raises(InsufficientUserAuthentication) as info:
            requirement.check(bad, NOW)
        challenge = info.value.challenge("api")
        assert challenge is not None
        params = dict(parse_challenges(challenge.to_header())[0].extra)
        assert params == {"acr_values": "urn:mfa urn:hw", "max_age": "300"}
        assert info.value.status_code == 401


def test_step_up_validated() -> None:
    """A bare string, spaced values and negative max_age are configuration errors."""
    for args in (("urn:mfa", None), (("a b",), None), ((), -1), ((), True)):
        with pytest.raises(ConfigurationError):
            StepUpRequirement(*args)  # type: ignore[arg-type]


# ---------------------------------------------------------------- certificates and proxies


def _certificate() -> bytes:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_certificate_binding() -> None:
    """The right certificate passes; none, another or garbage is invalid_token."""
    pem = _certificate()
    der = load_certificate(pem)
    assert der is not None
    cnf = {"x5t#S256": certificate_thumbprint(der)}
    assert check_certificate_binding(cnf, der, MTLSSettings()) == cnf["x5t#S256"]
    other = load_certificate(_certificate())
    for presented in (None, other):
        with pytest.raises(InvalidToken):
            check_certificate_binding(cnf, presented, MTLSSettings())
    assert check_certificate_binding(None, None, MTLSSettings()) is None
    with pytest.raises(InvalidToken, match="not certificate-bound"):
        check_certificate_binding(None, der, MTLSSettings(required=True))
    assert load_certificate("not a certificate") is None
    from urllib.parse import quote

    assert load_certificate(quote(pem.decode())) == der


def test_forwarded_headers_only_from_trusted_proxies() -> None:
    """X-Forwarded-* change the URI only when the peer is a listed proxy."""
    headers = [("x-forwarded-proto", "https"), ("x-forwarded-host", "api.example.com")]
    proxies = TrustedProxies(("10.0.0.0/8",))
    assert request_url("http", "internal:8000", "/x", headers, "10.1.2.3", proxies) == "https://api.example.com/x"
    assert request_url("http", "internal:8000", "/x", headers, "192.0.2.1", proxies) == "http://internal:8000/x"
    assert request_url("http", "internal:8000", "/x", headers, "10.1.2.3", None) == "http://internal:8000/x"
    with pytest.raises(ConfigurationError):
        TrustedProxies("10.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        TrustedProxies(("not-an-ip",))


# ---------------------------------------------------------------- RFC 9728


def test_metadata_locations() -> None:
    """RFC 9728 §3.1: the well-known segment goes before the resource's path."""
    assert metadata_url("https://api.test/mcp") == "https://api.test/.well-known/oauth-protected-resource/mcp"
    assert metadata_url("https://api.test") == "https://api.test/.well-known/oauth-protected-resource"
    assert metadata_paths("https://api.test/mcp/") == (
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    )
    for bad in ("api.test", "https://api.test/?q=1", "https://api.test/#f", "ftp://api.test/"):
        with pytest.raises(ConfigurationError):
            metadata_url(bad)


def test_metadata_document() -> None:
    """Members as RFC 9728 §2 names them; bare strings refused."""
    document = ProtectedResourceMetadata(
        resource="https://api.test/mcp",
        authorization_servers=("https://as.test",),
        scopes_supported=("b", "a"),
        dpop_signing_alg_values_supported=("ES256",),
    ).to_dict()
    assert document == {
        "resource": "https://api.test/mcp",
        "authorization_servers": ["https://as.test"],
        "scopes_supported": ["a", "b"],
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": ["ES256"],
        "dpop_bound_access_tokens_required": False,
    }
    with pytest.raises(ConfigurationError):
        ProtectedResourceMetadata(resource="https://api.test", scopes_supported="read")  # type: ignore[arg-type]


def test_token_errors_keep_their_scheme() -> None:
    """Errors default to the Bearer scheme; DPoP errors to DPoP."""
    assert TokenError().auth_scheme == "Bearer"
    assert InvalidDPoPProof().auth_scheme == "DPoP"


# ---------------------------------------------------------------- hostile input, property-based


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_htu_normaliser_total_and_idempotent(value: str) -> None:
    """Any text either normalises (and normalising again changes nothing) or raises ValueError."""
    try:
        once = normalize_htu(value)
    except ValueError:
        return
    assert normalize_htu(once) == once


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_certificate_loader_total(value: str | bytes) -> None:
    """Garbage certificates are None, never an exception."""
    assert load_certificate(value) is None


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=100), st.floats(min_value=0, max_value=1e10))
def test_nonce_and_proxy_checks_total(value: str, now: float) -> None:
    """Hostile nonces and peer addresses are simply not valid / not trusted."""
    assert not DPoPNonces(b"s" * 32).is_valid(value, now) or value == DPoPNonces(b"s" * 32).current(now)
    assert TrustedProxies(("10.0.0.0/8",)).trusts(value) in (True, False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=60), max_size=3), st.lists(st.text(max_size=60), max_size=3))
def test_request_entry_total(authorization: list[str], proofs: list[str]) -> None:
    """Any Authorization and DPoP headers end in a verdict or a TokenError, never another exception."""
    import asyncio

    from tokenguard import TokenGuard
    from tokenguard.request_auth import RequestContext, verify_request

    guard = TokenGuard.from_keys(
        issuer="https://issuer.test",
        audience="https://api.test",
        hmac_keys={None: b"k" * 32},
        algorithms=["HS256"],
        dpop="allowed",
    )
    headers = tuple([("authorization", a) for a in authorization] + [("dpop", p) for p in proofs])
    context = RequestContext(method="GET", url=URL, headers=headers)
    try:
        asyncio.run(verify_request(guard, context))
    except TokenError:
        pass


@pytest.mark.parametrize(
    ("authorization", "status", "scheme", "error"),
    [
        ("DPoP a b", 400, "DPoP", "invalid_request"),
        ("DPoP ", 400, "DPoP", "invalid_request"),
        ("Bearer a b", 400, "Bearer", "invalid_request"),
        ("DPoP " + "a" * 9000, 401, "DPoP", "invalid_token"),
    ],
)
def test_malformed_credentials_answer_on_their_scheme(authorization: str, status: int, scheme: str, error: str) -> None:
    """A malformed DPoP credential is refused on the DPoP challenge, a malformed Bearer one on Bearer."""
    import asyncio

    from tokenguard import TokenGuard
    from tokenguard.request_auth import RequestContext, verify_request

    guard = TokenGuard.from_keys(
        issuer="https://issuer.test",
        audience="https://api.test",
        hmac_keys={None: b"k" * 32},
        algorithms=["HS256"],
        dpop="allowed",
    )
    context = RequestContext(method="GET", url=URL, headers=(("authorization", authorization),))
    with pytest.raises(TokenError) as info:
        asyncio.run(verify_request(guard, context))
    assert info.value.status_code == status
    rendered = guard.error_response(info.value)
    challenges = {c.scheme: c for c in parse_challenges(dict(rendered.headers)["WWW-Authenticate"])}
    assert challenges[scheme].error == error
    other = "Bearer" if scheme == "DPoP" else "DPoP"
    assert challenges[other].error is None


def test_redis_replay_store_bounded_and_fails_closed(redis_server: Any) -> None:
    """Against a real Redis: replays refused, the entry bound enforced (503) and released, an outage is 503."""
    import asyncio

    from tokenguard.replay import RedisReplayStore

    store = RedisReplayStore(redis_server.url, max_entries=2)
    now = time.time()
    assert store.add_sync("a", now + 60, now)
    assert not store.add_sync("a", now + 60, now)
    assert store.add_sync("b", now + 60, now)
    with pytest.raises(ServiceUnavailable, match="full"):
        store.add_sync("c", now + 60, now)
    # Counted per time bucket: once the entries' lifetime has passed, the bound frees up.
    assert store.add_sync("c", now + 1060, now + 1000)

    async def async_side() -> bool:
        try:
            return await store.add("a", now + 60, now)
        finally:
            await store.aclose()

    assert asyncio.run(async_side()) is False
    redis_server.kill()
    with pytest.raises(ServiceUnavailable, match="unavailable"):
        store.add_sync("d", now + 60, now)
    store.close()
