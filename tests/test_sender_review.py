"""Sender-constrained guards at their seams: direct verify(), adapters without a request, options.

Tokens come from the loopback :class:`LocalIssuer`; proofs from joserfc.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tokenguard import ConfigurationError, InvalidToken
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


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        # PEP 3333: PATH_INFO is percent-decoded; the client's htu is not.
        ({"PATH_INFO": "/books/a b", "RAW_URI": "/books/a%20b?q=1"}, "https://api.test/books/a%20b"),
        ({"PATH_INFO": "/books/a/b", "REQUEST_URI": "/books/a%2Fb"}, "https://api.test/books/a%2Fb"),
        ({"PATH_INFO": "/books/a b"}, "https://api.test/books/a%20b"),
        ({"PATH_INFO": "/books/\xc3\xa9"}, "https://api.test/books/%C3%A9"),
        ({"SCRIPT_NAME": "/app", "PATH_INFO": "/x y"}, "https://api.test/app/x%20y"),
    ],
)
def test_wsgi_htu_keeps_the_percent_encoding_the_client_sent(environ: dict[str, Any], expected: str) -> None:
    """A DPoP proof's htu names the URI as sent (RFC 9449 §4.3 check 9); WSGI decodes PATH_INFO,
    so the WSGI context must rebuild the encoded path, or every proof for such a path fails."""
    from tokenguard.dpop import normalize_htu
    from tokenguard.request_auth import wsgi_request_context

    base = {"REQUEST_METHOD": "GET", "wsgi.url_scheme": "https", "HTTP_HOST": "api.test", "REMOTE_ADDR": "10.0.0.9"}
    context = wsgi_request_context({**base, **environ}, None)
    assert normalize_htu(context.url) == normalize_htu(expected)


@pytest.mark.parametrize("ahead", [3600, 10**9])
def test_step_up_refuses_auth_time_in_the_future(ahead: int) -> None:
    """An auth_time ahead of the clock cannot prove a recent authentication: with max_age it would
    stay "fresh" until the clock caught up. It is refused like a missing auth_time (RFC 9470 §6)."""
    import time

    from tokenguard import TokenClaims
    from tokenguard.stepup import InsufficientUserAuthentication, StepUpRequirement

    now = time.time()
    requirement = StepUpRequirement(max_age=300)
    with pytest.raises(InsufficientUserAuthentication):
        requirement.check(TokenClaims({"sub": "u", "auth_time": int(now) + ahead}, token_type="jwt"), now)
    requirement.check(TokenClaims({"sub": "u", "auth_time": int(now) + 5}, token_type="jwt"), now)  # small skew passes
    requirement.check(TokenClaims({"sub": "u", "auth_time": int(now) - 100}, token_type="jwt"), now)


def test_wsgi_htu_raw_uri_yields_to_a_mounted_prefix() -> None:
    """RAW_URI is the server's view; when a middleware mounted the app under a prefix (SCRIPT_NAME),
    the path it no longer matches is rebuilt from SCRIPT_NAME + PATH_INFO instead."""
    from tokenguard.request_auth import wsgi_request_context

    environ = {
        "REQUEST_METHOD": "GET",
        "wsgi.url_scheme": "https",
        "HTTP_HOST": "api.test",
        "SCRIPT_NAME": "/v1",
        "PATH_INFO": "/a b",
        "RAW_URI": "/a%20b",
    }
    assert wsgi_request_context(environ, None).url == "https://api.test/v1/a%20b"
    environ["PATH_INFO"] = "/100%"
    environ["RAW_URI"] = "/100%25"
    environ["SCRIPT_NAME"] = ""
    assert wsgi_request_context(environ, None).url == "https://api.test/100%25"


@pytest.mark.parametrize("host", ["api.test/other?", "api.test/other#", "api.test/other", "evil@api.test", "a b", ""])
def test_malformed_host_cannot_steer_htu(host: str) -> None:
    """The Host header builds the URI a proof's htu is compared with. One carrying a path, query or
    fragment ("api.test/other?") would make a proof made for /other match a request to /books
    (RFC 9449 §4.3 check 9): it is refused with 400 (RFC 9112 §3.2: an invalid Host is 400)."""
    from tokenguard.errors import InvalidRequest
    from tokenguard.request_auth import asgi_request_context, wsgi_request_context

    scope = {
        "type": "http",
        "method": "GET",
        "scheme": "https",
        "path": "/books",
        "raw_path": b"/books",
        "query_string": b"",
        "headers": [(b"host", host.encode())],
        "client": ("10.0.0.9", 5000),
    }
    with pytest.raises(InvalidRequest):
        asgi_request_context(scope, None)
    environ = {"REQUEST_METHOD": "GET", "wsgi.url_scheme": "https", "HTTP_HOST": host, "PATH_INFO": "/books"}
    if host:
        with pytest.raises(InvalidRequest):
            wsgi_request_context(environ, None)


def test_forwarded_host_from_trusted_proxy_is_checked_too() -> None:
    """X-Forwarded-Host from a trusted proxy goes through the same Host syntax check."""
    from tokenguard.errors import InvalidRequest
    from tokenguard.forwarded import TrustedProxies, request_url

    proxies = TrustedProxies(["10.0.0.1"])
    headers = [("x-forwarded-host", "api.test/other?")]
    with pytest.raises(InvalidRequest):
        request_url("https", "internal:8080", "/books", headers, "10.0.0.1", proxies)
    ok = request_url("https", "internal:8080", "/books", [("x-forwarded-host", "API.test:443")], "10.0.0.1", proxies)
    assert ok == "https://API.test:443/books"
    assert request_url("http", "[::1]:8000", "/b", [], "10.0.0.9", proxies) == "http://[::1]:8000/b"


def test_wsgi_encoded_query_mark_in_path_is_not_a_query() -> None:
    """PATH_INFO "/books?/x" (sent as /books%3F/x) must not normalise to /books: a proof for /books
    would match a request to another resource."""
    from tokenguard.dpop import normalize_htu
    from tokenguard.request_auth import wsgi_request_context

    environ = {"REQUEST_METHOD": "GET", "wsgi.url_scheme": "https", "HTTP_HOST": "api.test", "PATH_INFO": "/books?/x"}
    assert normalize_htu(wsgi_request_context(environ, None).url) != "https://api.test/books"


@pytest.mark.parametrize("route", ["allowed", "disabled"])
def test_route_cannot_relax_a_guard_that_requires_dpop(shared_issuer: LocalIssuer, route: str) -> None:
    """The guard refuses Bearer before any route is known when it requires DPoP, so a route asking
    for "allowed" or "disabled" could never be reached: refused at construction, naming the option."""
    from tokenguard import ConfigurationError

    guard = shared_issuer.guard(introspection=False, dpop="required")
    with pytest.raises(ConfigurationError, match="dpop"):
        guard.requires("read", dpop=route)  # type: ignore[arg-type]
    guard.requires("read", dpop="required")
    guard.close()


def test_mcp_missing_token_scope_survives_dpop_required(shared_issuer: LocalIssuer) -> None:
    """MCP: a 401 without credentials names the scope needed. With DPoP required only the DPoP
    challenge is sent, so the scope must ride on it (it was dropped with the Bearer challenge)."""
    from tokenguard.challenge import parse_challenges
    from tokenguard.mcp import _MissingTokenWithScope

    guard = shared_issuer.guard(introspection=False, dpop="required", resource="https://mcp.test/mcp")
    rendered = guard.error_response(_MissingTokenWithScope(("mcp:tools", "mcp:read")))
    header = dict(rendered.headers)["WWW-Authenticate"]
    (challenge,) = parse_challenges(header)
    assert challenge.scheme == "DPoP"
    assert challenge.scope == ("mcp:tools", "mcp:read")
    assert challenge.error is None
    assert dict(challenge.extra)["resource_metadata"].endswith("/.well-known/oauth-protected-resource/mcp")
    guard.close()


def test_declare_scopes_refuses_non_scope_names(shared_issuer: LocalIssuer) -> None:
    """declare_scopes()/requires() validate names before registering them for the RFC 9728 document:
    a list passed as one scope is a ConfigurationError, not a TypeError, and nothing is registered."""
    from tokenguard import ConfigurationError

    guard = shared_issuer.guard(introspection=False)
    with pytest.raises(ConfigurationError):
        guard.declare_scopes(["read"])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        guard.declare_scopes("two words")
    with pytest.raises(ConfigurationError):
        guard.requires("read", acr_values="mfa")  # type: ignore[arg-type]
    assert guard.route_scopes == frozenset()
    guard.declare_scopes()
    guard.declare_scopes("read")
    assert guard.route_scopes == {"read"}
    guard.close()


@pytest.mark.parametrize(
    "options",
    [
        {"max_age": "300"},
        {"max_age": True},
        {"max_age": float("nan")},
        {"max_age": float("inf")},
        {"leeway": "5"},
        {"leeway": float("nan")},
        {"leeway": None},
    ],
)
def test_dpop_settings_refuse_non_numbers(options: dict[str, Any]) -> None:
    """DPoPSettings' windows are checked at construction: a string, a bool, NaN or infinity is a
    ConfigurationError naming the option (a string crashed with TypeError; NaN disabled the iat check)."""
    from tokenguard import ConfigurationError
    from tokenguard.dpop import DPoPSettings

    with pytest.raises(ConfigurationError, match=next(iter(options))):
        DPoPSettings(**options)


@pytest.mark.parametrize("value", ["10", True, -1])
def test_replay_store_bounds_are_checked(value: Any) -> None:
    """max_entries of both replay stores: a whole non-negative (memory: positive) number."""
    from tokenguard import ConfigurationError
    from tokenguard.replay import MemoryReplayStore, RedisReplayStore

    with pytest.raises(ConfigurationError, match="max_entries"):
        MemoryReplayStore(max_entries=value)
    with pytest.raises(ConfigurationError, match="max_entries"):
        RedisReplayStore("redis://localhost", max_entries=value)


def _dpop_call(client: Any, url: str, token: str) -> Any:
    import time

    proof = make_proof(htu=url, iat=int(time.time()), ath=access_token_hash(token))
    return client.get(url, headers={"Authorization": f"DPoP {token}", "DPoP": proof})


@pytest.mark.parametrize("stack", ["starlette", "mcp"])
def test_insufficient_scope_answers_on_the_dpop_scheme(shared_issuer: LocalIssuer, stack: str) -> None:
    """RFC 9449 §7.1: a request made with a DPoP-bound token gets its 403 insufficient_scope on the
    DPoP challenge, not on Bearer (FastAPI's Requirement already did; Starlette requires() and the MCP
    gate did not)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from tokenguard.challenge import parse_challenges
    from tokenguard.mcp import protect_mcp
    from tokenguard.starlette import TokenGuardMiddleware, requires

    guard = shared_issuer.guard(introspection=False, dpop="allowed", resource="https://api.test")
    if stack == "starlette":

        @requires(guard, "write")
        async def books(request: Request) -> PlainTextResponse:
            return PlainTextResponse("ok")

        app: Any = TokenGuardMiddleware(Starlette(routes=[Route("/books", books)]), guard, protect=False)
    else:

        async def books_plain(request: Request) -> PlainTextResponse:
            return PlainTextResponse("ok")

        app = protect_mcp(Starlette(routes=[Route("/books", books_plain)]), guard, scopes=["write"])
    jkt = jwk_thumbprint(EC.as_dict(private=False))
    token = shared_issuer.issue(scope="read", extra_claims={"cnf": {"jkt": jkt}})
    with TestClient(app) as client:
        response = _dpop_call(client, "http://testserver/books", token)
    assert response.status_code == 403
    challenges = {c.scheme: c for c in parse_challenges(response.headers["www-authenticate"])}
    assert challenges["DPoP"].error == "insufficient_scope"
    assert challenges["Bearer"].error is None
    guard.close()


def test_insufficient_scope_answers_on_the_dpop_scheme_flask(shared_issuer: LocalIssuer) -> None:
    """Flask's require_token: a DPoP request's 403 goes on the DPoP challenge (RFC 9449 §7.1)."""
    import time

    from flask import Flask

    from tokenguard.challenge import parse_challenges
    from tokenguard.flask import FlaskTokenGuard

    guard = shared_issuer.guard(introspection=False, dpop="allowed")
    app = Flask(__name__)
    extension = FlaskTokenGuard(app, guard)

    @app.get("/books")
    @extension.requires("write")
    def books() -> str:
        return "ok"

    jkt = jwk_thumbprint(EC.as_dict(private=False))
    token = shared_issuer.issue(scope="read", extra_claims={"cnf": {"jkt": jkt}})
    proof = make_proof(htu="http://localhost/books", iat=int(time.time()), ath=access_token_hash(token))
    response = app.test_client().get("/books", headers={"Authorization": f"DPoP {token}", "DPoP": proof})
    assert response.status_code == 403
    challenges = {c.scheme: c for c in parse_challenges(response.headers["www-authenticate"])}
    assert challenges["DPoP"].error == "insufficient_scope"
    assert challenges["Bearer"].error is None
    guard.close()


def test_flask_route_rules_are_checked_against_a_guard_built_later() -> None:
    """Views decorated before init_app builds the guard from app.config: their DPoP mode and scopes are
    checked against that guard at init_app, as they would be against a guard given up front."""
    from flask import Flask

    from tokenguard.flask import FlaskTokenGuard

    def configured() -> Flask:
        app = Flask("late")
        app.config.update(TOKENGUARD_ISSUER="https://issuer.example", TOKENGUARD_AUDIENCE="https://api.example")
        return app

    needs_dpop = FlaskTokenGuard()

    @needs_dpop.requires("read", dpop="required")
    def bound() -> str:
        return "never served"

    with pytest.raises(ConfigurationError, match="needs DPoP enabled on the guard"):
        needs_dpop.init_app(configured())

    fine = FlaskTokenGuard()

    @fine.requires("books:read")
    def books() -> str:
        return "ok"

    app = configured()
    fine.init_app(app)
    assert fine.guard is not None and "books:read" in fine.guard.route_scopes  # declared for RFC 9728



def test_flask_route_decorated_after_two_apps_is_checked_against_both_guards() -> None:
    """One extension, two apps whose guards come from their configs (application factory): a route decorated
    after both init_app calls is checked against each app's guard and declares its scopes to both, not only to
    the last app initialised."""
    from flask import Flask

    from tokenguard.flask import FlaskTokenGuard

    extension = FlaskTokenGuard()
    guards = []
    for name in ("first", "second"):
        app = Flask(name)
        app.config.update(TOKENGUARD_ISSUER=f"https://{name}.example", TOKENGUARD_AUDIENCE="https://api.example")
        extension.init_app(app)
        guards.append(extension.guard)
    extension.requires("books:read")
    assert all(guard is not None and "books:read" in guard.route_scopes for guard in guards)
    with pytest.raises(ConfigurationError, match="needs DPoP enabled on the guard"):
        extension.requires("read", dpop="required")
