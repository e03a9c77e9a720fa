"""DPoP end to end: tokens bound by the real oidc-provider, proofs made by joserfc.

Neither the bound tokens nor the proofs come from tokenguard: node
``oidc-provider`` (with its DPoP feature on) binds client-credentials tokens to
the key of the proof sent to its token endpoint (``cnf.jkt``), and joserfc
(an independent JOSE implementation) signs every proof. The API is a Starlette
app behind :class:`TokenGuardMiddleware` under a real uvicorn.
"""

from __future__ import annotations

import contextlib
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from joserfc import jwk, jwt
from joserfc.errors import SecurityWarning
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tokenguard import TokenGuard
from tokenguard.challenge import parse_challenges
from tokenguard.dpop import DPoPSettings, access_token_hash
from tokenguard.nonce import DPoPNonces
from tokenguard.replay import RedisReplayStore
from tokenguard.request_auth import VERDICT_KEY
from tokenguard.starlette import TokenGuardMiddleware

from .conftest import RedisServer, UvicornServer
from .test_oidc_provider import RESOURCE, OIDCProvider

pytestmark = pytest.mark.integration


class DPoPClient:
    """A DPoP client key with joserfc: makes proofs for the token endpoint and the API."""

    def __init__(self, kind: str = "EC") -> None:
        if kind == "EC":
            self.key: Any = jwk.ECKey.generate_key("P-256")
            self.alg = "ES256"
        elif kind == "OKP":
            self.key = jwk.OKPKey.generate_key("Ed25519")
            self.alg = "EdDSA"
        else:
            self.key = jwk.RSAKey.generate_key(2048)
            self.alg = "PS256"

    def proof(self, htm: str, htu: str, token: str | None = None, **claims: Any) -> str:
        payload: dict[str, Any] = {"jti": uuid.uuid4().hex, "htm": htm, "htu": htu, "iat": int(time.time())}
        if token is not None:
            payload["ath"] = access_token_hash(token)
        payload.update(claims)
        header = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.key.as_dict(private=False)}
        with warnings.catch_warnings():
            # joserfc flags "EdDSA" (RFC 9864 prefers "Ed25519"); oidc-provider 8 knows only "EdDSA".
            warnings.simplefilter("ignore", SecurityWarning)
            return jwt.encode(header, payload, self.key, algorithms=[self.alg])

    def token(self, provider: OIDCProvider, *, resource: str | None = RESOURCE, scope: str = "read") -> str:
        url = f"{provider.issuer}/token"
        data = {"grant_type": "client_credentials", "scope": scope}
        if resource is not None:
            data["resource"] = resource
        response = httpx.post(url, data=data, auth=("app", "app-secret"), headers={"DPoP": self.proof("POST", url)})
        response.raise_for_status()
        body = response.json()
        assert body["token_type"] == "DPoP"
        token: str = body["access_token"]
        return token


def make_guard(provider: OIDCProvider, **options: Any) -> TokenGuard:
    """A guard for the provider whose async client keeps no idle connection to it.

    The uvicorn thread's event loop ends with the server; a pooled connection
    to the provider would outlive it and be reported as unclosed.
    """
    client = httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0))
    return provider.guard(async_http_client=client, **options)


async def dpop_books(request: Request) -> JSONResponse:
    verdict = request.scope[VERDICT_KEY]
    claims = request.state.token
    return JSONResponse(
        {"sub": claims.subject, "scheme": verdict.scheme, "jkt": verdict.dpop_jkt, "bound": claims.bound_key_thumbprint}
    )


def dpop_app(guard: TokenGuard) -> Any:
    return TokenGuardMiddleware(Starlette(routes=[Route("/books", dpop_books, methods=["GET", "POST"])]), guard)


@pytest.fixture
def api(oidc_provider: OIDCProvider) -> Iterator[tuple[str, TokenGuard]]:
    guard = make_guard(oidc_provider, dpop=DPoPSettings(mode="allowed"))
    with UvicornServer(dpop_app(guard)) as server, guard:
        yield server.url, guard


def call(url: str, token: str, proof: str | None, *, scheme: str = "DPoP", method: str = "GET") -> httpx.Response:
    headers = {"Authorization": f"{scheme} {token}"}
    if proof is not None:
        headers["DPoP"] = proof
    return httpx.request(method, f"{url}/books", headers=headers)


def dpop_error(response: httpx.Response) -> str | None:
    challenges = {c.scheme: c for c in parse_challenges(response.headers["www-authenticate"])}
    return challenges["DPoP"].error


def test_bound_token_with_proof_is_accepted(oidc_provider: OIDCProvider, api: tuple[str, TokenGuard]) -> None:
    """A provider-bound token with a joserfc proof passes; the verdict exposes the key thumbprint."""
    url, _ = api
    for kind in ("EC", "OKP", "RSA"):
        client = DPoPClient(kind)
        token = client.token(oidc_provider)
        response = call(url, token, client.proof("GET", f"{url}/books", token))
        assert response.status_code == 200, response.text
        assert response.json()["scheme"] == "DPoP"
        assert response.json()["jkt"] == client.key.thumbprint() == response.json()["bound"]
        assert "authorization" in response.headers["vary"].lower()


def test_opaque_bound_token_via_introspection(oidc_provider: OIDCProvider, api: tuple[str, TokenGuard]) -> None:
    """An opaque DPoP-bound token is bound through the introspection answer's cnf.jkt."""
    url, _ = api
    client = DPoPClient()
    token = client.token(oidc_provider, resource=None)
    assert token.count(".") != 2
    response = call(url, token, client.proof("GET", f"{url}/books", token))
    assert response.status_code == 200, response.text
    other = DPoPClient()
    response = call(url, token, other.proof("GET", f"{url}/books", token))
    assert response.status_code == 401
    assert dpop_error(response) == "invalid_dpop_proof"


def test_replayed_proof_is_refused(oidc_provider: OIDCProvider, api: tuple[str, TokenGuard]) -> None:
    """The same proof twice: the second is invalid_dpop_proof (jti replay)."""
    url, _ = api
    client = DPoPClient()
    token = client.token(oidc_provider)
    proof = client.proof("GET", f"{url}/books", token)
    assert call(url, token, proof).status_code == 200
    response = call(url, token, proof)
    assert response.status_code == 401
    assert dpop_error(response) == "invalid_dpop_proof"
    assert "used before" in response.json()["error_description"]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("htu", "htu does not match"),
        ("htm", "htm does not match"),
        ("ath", "ath does not match"),
        ("no-ath", "ath does not match"),
        ("old", "too old"),
        ("future", "in the future"),
        ("typ", "typ must be dpop+jwt"),
    ],
)
def test_wrong_proof_claims(oidc_provider: OIDCProvider, api: tuple[str, TokenGuard], case: str, expected: str) -> None:
    """Each wrong proof claim is its own invalid_dpop_proof on the DPoP challenge, with no-store."""
    url, _ = api
    client = DPoPClient()
    token = client.token(oidc_provider)
    htu = f"{url}/books"
    if case == "htu":
        proof = client.proof("GET", f"{url}/other", token)
    elif case == "htm":
        proof = client.proof("POST", htu, token)
    elif case == "ath":
        proof = client.proof("GET", htu, client.token(oidc_provider))
    elif case == "no-ath":
        proof = client.proof("GET", htu)
    elif case == "old":
        proof = client.proof("GET", htu, token, iat=int(time.time()) - 3600)
    elif case == "future":
        proof = client.proof("GET", htu, token, iat=int(time.time()) + 3600)
    else:
        header = {"typ": "JWT", "alg": "ES256", "jwk": client.key.as_dict(private=False)}
        claims = {"jti": "x", "htm": "GET", "htu": htu, "iat": int(time.time()), "ath": access_token_hash(token)}
        proof = jwt.encode(header, claims, client.key)
    response = call(url, token, proof)
    assert response.status_code == 401
    assert dpop_error(response) == "invalid_dpop_proof"
    assert expected in response.json()["error_description"]
    assert response.headers["cache-control"] == "no-store"
    bearer = {c.scheme: c for c in parse_challenges(response.headers["www-authenticate"])}["Bearer"]
    assert bearer.error is None  # RFC 9449 §7.2: the error only on the scheme used


def test_htu_compared_after_normalisation(oidc_provider: OIDCProvider, api: tuple[str, TokenGuard]) -> None:
    """RFC 3986 normalisation: upper-case scheme/host, default-less port, and a query are tolerated."""
    url, _ = api
    client = DPoPClient()
    token = client.token(oidc_provider)
    spelled = url.replace("http://", "HTTP://") + "/./books?page=2#frag"
    assert call(url, token, client.proof("GET", spelled, token)).status_code == 200


def test_proof_key_mismatch(oidc_provider: OIDCProvider, api: tuple[str, TokenGuard]) -> None:
    """A valid proof made with another key than the token is bound to is refused."""
    url, _ = api
    token = DPoPClient().token(oidc_provider)
    thief = DPoPClient()
    response = call(url, token, thief.proof("GET", f"{url}/books", token))
    assert response.status_code == 401
    assert dpop_error(response) == "invalid_dpop_proof"
    assert "does not match the token binding" in response.json()["error_description"]


def test_missing_proof(oidc_provider: OIDCProvider, api: tuple[str, TokenGuard]) -> None:
    """The DPoP scheme without a DPoP header is invalid_dpop_proof."""
    url, _ = api
    token = DPoPClient().token(oidc_provider)
    response = call(url, token, None)
    assert response.status_code == 401
    assert dpop_error(response) == "invalid_dpop_proof"


def test_two_proofs_are_400(oidc_provider: OIDCProvider, api: tuple[str, TokenGuard]) -> None:
    """Two DPoP header fields, or one with a comma list, are 400 invalid_request (RFC 9449 §4.3 check 1)."""
    url, _ = api
    client = DPoPClient()
    token = client.token(oidc_provider)
    one, two = client.proof("GET", f"{url}/books", token), client.proof("GET", f"{url}/books", token)
    response = httpx.get(f"{url}/books", headers=[("Authorization", f"DPoP {token}"), ("DPoP", one), ("DPoP", two)])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    response = httpx.get(f"{url}/books", headers={"Authorization": f"DPoP {token}", "DPoP": f"{one}, {two}"})
    assert response.status_code == 400


def test_downgrade_bound_token_as_bearer(oidc_provider: OIDCProvider, api: tuple[str, TokenGuard]) -> None:
    """A DPoP-bound token sent as Bearer is refused: a stolen bound token is useless without its key."""
    url, _ = api
    token = DPoPClient().token(oidc_provider)
    response = call(url, token, None, scheme="Bearer")
    assert response.status_code == 401
    challenges = {c.scheme: c for c in parse_challenges(response.headers["www-authenticate"])}
    assert challenges["Bearer"].error == "invalid_token"
    assert challenges["DPoP"].error is None


def test_proof_for_unbound_token(oidc_provider: OIDCProvider, api: tuple[str, TokenGuard]) -> None:
    """An unbound (Bearer) token presented with the DPoP scheme and a proof is refused."""
    url, _ = api
    token = oidc_provider.token()
    client = DPoPClient()
    response = call(url, token, client.proof("GET", f"{url}/books", token))
    assert response.status_code == 401
    assert dpop_error(response) == "invalid_token"
    # ...while the same unbound token as plain Bearer is fine where DPoP is only allowed.
    assert call(url, token, None, scheme="Bearer").status_code == 200


def test_bearer_with_dpop_header_is_ambiguous(oidc_provider: OIDCProvider, api: tuple[str, TokenGuard]) -> None:
    """A Bearer token next to a DPoP header: 400, the server does not guess."""
    url, _ = api
    client = DPoPClient()
    token = client.token(oidc_provider)
    response = call(url, token, client.proof("GET", f"{url}/books", token), scheme="Bearer")
    assert response.status_code == 400


def test_no_credentials_gets_both_challenges(api: tuple[str, TokenGuard]) -> None:
    """Without credentials: a bare Bearer challenge and a DPoP challenge with algs, no error code."""
    url, _ = api
    response = httpx.get(f"{url}/books")
    assert response.status_code == 401
    challenges = {c.scheme: c for c in parse_challenges(response.headers["www-authenticate"])}
    assert challenges["Bearer"].error is None and challenges["DPoP"].error is None
    assert dict(challenges["DPoP"].extra)["algs"] == "ES256 ES384 EdDSA PS256 RS256"


def test_required_mode_refuses_bearer(oidc_provider: OIDCProvider) -> None:
    """With DPoP required, an unbound Bearer token is refused and only DPoP is offered."""
    guard = make_guard(oidc_provider, dpop="required")
    with UvicornServer(dpop_app(guard)) as server, guard:
        response = call(server.url, oidc_provider.token(), None, scheme="Bearer")
        assert response.status_code == 401
        challenges = parse_challenges(response.headers["www-authenticate"])
        assert [c.scheme for c in challenges] == ["DPoP"]
        assert challenges[0].error == "invalid_token"
        client = DPoPClient()
        token = client.token(oidc_provider)
        assert call(server.url, token, client.proof("GET", f"{server.url}/books", token)).status_code == 200


def test_server_nonce(oidc_provider: OIDCProvider) -> None:
    """Missing nonce: 401 use_dpop_nonce with DPoP-Nonce; with it: 200, and a nonce on the answer."""
    guard = make_guard(oidc_provider, dpop=DPoPSettings(nonces=DPoPNonces(b"n" * 32, lifetime=60)))
    with UvicornServer(dpop_app(guard)) as server, guard:
        client = DPoPClient()
        token = client.token(oidc_provider)
        htu = f"{server.url}/books"
        response = call(server.url, token, client.proof("GET", htu, token))
        assert response.status_code == 401
        assert dpop_error(response) == "use_dpop_nonce"
        assert response.headers["cache-control"] == "no-store"
        nonce = response.headers["dpop-nonce"]
        response = call(server.url, token, client.proof("GET", htu, token, nonce="not-ours"))
        assert dpop_error(response) == "use_dpop_nonce"
        response = call(server.url, token, client.proof("GET", htu, token, nonce=nonce))
        assert response.status_code == 200, response.text
        assert response.headers["dpop-nonce"]


def worker(guard: TokenGuard, store: RedisReplayStore) -> UvicornServer:
    """A uvicorn worker whose shutdown closes its loop's Redis connections."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await store.aclose()

    app = Starlette(routes=[Route("/books", dpop_books)], lifespan=lifespan)
    server = UvicornServer(TokenGuardMiddleware(app, guard))
    server.server.config.lifespan = "on"
    return server


def test_replay_across_workers_with_redis(oidc_provider: OIDCProvider, redis_server: RedisServer) -> None:
    """Two guards (two workers) sharing a Redis replay store: a proof accepted by one is refused by the other."""
    stores = [RedisReplayStore(redis_server.url) for _ in range(2)]
    guards = [make_guard(oidc_provider, dpop=DPoPSettings(replay=store)) for store in stores]
    with worker(guards[0], stores[0]) as first, worker(guards[1], stores[1]) as second:
        client = DPoPClient()
        token = client.token(oidc_provider)
        # Both servers are addressed with the same Host, as behind one load balancer.
        htu = f"{first.url}/books"
        proof = client.proof("GET", htu, token)
        headers = {"Authorization": f"DPoP {token}", "DPoP": proof, "Host": first.url.removeprefix("http://")}
        assert httpx.get(f"{first.url}/books", headers=headers).status_code == 200
        response = httpx.get(f"{second.url}/books", headers=headers)
        assert response.status_code == 401
        assert "used before" in response.json()["error_description"]
        redis_server.kill()
        fresh = {**headers, "DPoP": client.proof("GET", htu, token)}
        response = httpx.get(f"{first.url}/books", headers=fresh)
        assert response.status_code == 503  # fail closed: no store, no acceptance
    for guard in guards:
        guard.close()


@pytest.mark.parametrize("trusted", [True, False])
def test_htu_behind_trusted_proxy(oidc_provider: OIDCProvider, trusted: bool) -> None:
    """X-Forwarded-Proto/Host rebuild the htu only when the peer is a listed proxy."""
    from tokenguard.forwarded import TrustedProxies

    proxies = TrustedProxies(("127.0.0.1",) if trusted else ("10.0.0.0/8",))
    guard = make_guard(oidc_provider, dpop="allowed", trusted_proxies=proxies)
    with UvicornServer(dpop_app(guard)) as server, guard:
        client = DPoPClient()
        token = client.token(oidc_provider)
        public = "https://api.example.com/books"
        headers = {
            "Authorization": f"DPoP {token}",
            "DPoP": client.proof("GET", public, token),
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "api.example.com",
        }
        response = httpx.get(f"{server.url}/books", headers=headers)
        assert response.status_code == (200 if trusted else 401), response.text


def test_dpop_through_fastapi_dependency_without_middleware(oidc_provider: OIDCProvider) -> None:
    """A FastAPI route requirement alone (no middleware) checks the proof, binding and replay too."""
    from fastapi import FastAPI, Security

    from tokenguard import TokenClaims
    from tokenguard.fastapi import setup

    guard = make_guard(oidc_provider, dpop="allowed")
    app = FastAPI()
    setup(app, guard)

    @app.get("/books")
    async def books(claims: TokenClaims = Security(guard.requires("read"))) -> dict[str, Any]:
        return {"jkt": claims.bound_key_thumbprint}

    with UvicornServer(app) as server, guard:
        client = DPoPClient()
        token = client.token(oidc_provider)
        url = f"{server.url}/books"
        headers = {"Authorization": f"DPoP {token}", "DPoP": client.proof("GET", url, token)}
        response = httpx.get(url, headers=headers)
        assert response.status_code == 200
        assert response.json()["jkt"] == client.key.thumbprint()
        assert httpx.get(url, headers=headers).status_code == 401  # replay
        assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 401  # downgrade


def test_websocket_handshake_with_dpop(oidc_provider: OIDCProvider) -> None:
    """A WebSocket handshake is a GET: a proof for http(s)://host/ws opens it; a replayed one is refused."""
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(websocket.scope[VERDICT_KEY].dpop_jkt)
        await websocket.close()

    guard = make_guard(oidc_provider, dpop="allowed")
    app = TokenGuardMiddleware(Starlette(routes=[WebSocketRoute("/ws", ws)]), guard)
    with UvicornServer(app) as server, guard:
        client = DPoPClient()
        token = client.token(oidc_provider)
        headers = {"Authorization": f"DPoP {token}", "DPoP": client.proof("GET", f"{server.url}/ws", token)}
        ws_url = server.url.replace("http://", "ws://") + "/ws"
        with connect(ws_url, additional_headers=headers) as connection:
            assert connection.recv() == client.key.thumbprint()
        with pytest.raises(InvalidStatus):
            connect(ws_url, additional_headers=headers)
