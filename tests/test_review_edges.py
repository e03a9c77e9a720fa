"""Seams between the adapters, options and sender-constrained tokens, found in review.

Each test drives a real adapter (Django's test client, FastAPI/Starlette on
uvicorn, plain WSGI under a real server) against the loopback issuer.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from fastapi import FastAPI

from tokenguard import ConfigurationError, TokenGuard, parse_challenges
from tokenguard.dpop import DPoPSettings
from tokenguard.fastapi import setup
from tokenguard.options import AdapterOptions
from tokenguard.testing import LocalIssuer

from .conftest import UvicornServer, WSGIServer
from .django_support import configure_django
from .test_dpop_oidc import DPoPClient
from .test_edges import STACKS, Served

configure_django()

from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.urls import path  # noqa: E402
from rest_framework.request import Request as DRFRequest  # noqa: E402
from rest_framework.response import Response as DRFResponse  # noqa: E402
from rest_framework.views import APIView  # noqa: E402

from tokenguard.django import requires  # noqa: E402

pytestmark = pytest.mark.integration
URLENCODED = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def idp() -> Iterator[LocalIssuer]:
    with LocalIssuer(algorithms=("ES256",)) as issuer:
        yield issuer


# ---------------------------------------------------------------- FastAPI setup(options=...)


def test_fastapi_setup_takes_an_options_object(idp: LocalIssuer) -> None:
    """setup(..., options=AdapterOptions(...)) once clashed with setup's own protect/public_paths
    defaults ("pass options= or protect, public_paths, not both") at the first request."""
    app = FastAPI()
    setup(app, idp.guard(), middleware=True, options=AdapterOptions(public_paths=["/health"]))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/books")
    async def books() -> dict[str, str]:
        return {"books": "yes"}

    with UvicornServer(app) as server:
        assert httpx.get(f"{server.url}/health").status_code == 200
        assert httpx.get(f"{server.url}/books").status_code == 401


def test_fastapi_setup_checks_middleware_options_at_once(idp: LocalIssuer) -> None:
    """A bad middleware option fails at setup(), not when the first request builds the stack."""
    with pytest.raises(ConfigurationError, match="public_paths"):
        setup(FastAPI(), idp.guard(), middleware=True, public_paths="/health")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not both"):
        setup(FastAPI(), idp.guard(), middleware=True, protect=False, options=AdapterOptions())


# ---------------------------------------------------------------- Django / DRF with DPoP configured


@requires("read")
def django_books(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"sub": request.tokenguard.subject})  # type: ignore[attr-defined]


class DRFBooks(APIView):
    required_scopes = ["read"]

    def get(self, request: DRFRequest) -> DRFResponse:
        return DRFResponse({"sub": request.auth.subject})


urlpatterns = [path("books", django_books), path("drf/books", DRFBooks.as_view())]

DRF = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["tokenguard.rest_framework.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["tokenguard.rest_framework.ScopePermission"],
    "EXCEPTION_HANDLER": "tokenguard.rest_framework.exception_handler",
}


@pytest.fixture
def dpop_guard(idp: LocalIssuer) -> TokenGuard:
    return idp.guard(dpop=DPoPSettings())


def _project(guard: TokenGuard, middleware: bool) -> Any:
    return override_settings(
        TOKENGUARD_GUARD=guard,
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["tokenguard.django.TokenGuardMiddleware"] if middleware else [],
        TOKENGUARD_PUBLIC_PATHS=[],
        REST_FRAMEWORK=DRF,
    )


@pytest.mark.parametrize("url", ["/books", "/drf/books"])
@pytest.mark.parametrize("middleware", [True, False], ids=["middleware", "no-middleware"])
def test_django_refuses_a_dpop_bound_token_sent_as_bearer(
    idp: LocalIssuer, dpop_guard: TokenGuard, url: str, middleware: bool
) -> None:
    """With DPoP configured the guard admits cnf-bound tokens in verify_sync; the Django
    adapters called it alone, so a stolen bound token worked as a plain Bearer token."""
    client_key = DPoPClient()
    token = idp.issue(alg="ES256", scope="read", extra_claims={"cnf": {"jkt": client_key.key.thumbprint()}})
    with _project(dpop_guard, middleware):
        response = Client().get(url, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


@pytest.mark.parametrize("url", ["/books", "/drf/books"])
@pytest.mark.parametrize("middleware", [True, False], ids=["middleware", "no-middleware"])
def test_django_accepts_a_dpop_bound_token_with_its_proof(
    idp: LocalIssuer, dpop_guard: TokenGuard, url: str, middleware: bool
) -> None:
    client_key = DPoPClient()
    token = idp.issue(alg="ES256", scope="read", extra_claims={"cnf": {"jkt": client_key.key.thumbprint()}})
    proof = client_key.proof("GET", f"http://testserver{url}", token)
    with _project(dpop_guard, middleware):
        response = Client().get(url, HTTP_AUTHORIZATION=f"DPoP {token}", HTTP_DPOP=proof)
    assert response.status_code == 200, response.content
    assert response.json() == {"sub": "user-1"}


# ---------------------------------------------------------------- form tokens: one answer everywhere


def _chunked(body: bytes) -> Iterator[bytes]:
    # A generator body: httpx sends it with Transfer-Encoding: chunked, no Content-Length.
    yield body[:20]
    yield body[20:]


@pytest.mark.parametrize("name", [*STACKS, "django"])
def test_chunked_form_token_gets_one_answer_in_every_adapter(idp: LocalIssuer, name: str) -> None:
    """An urlencoded body without Content-Length was searched by the ASGI middleware (200) and
    not by the WSGI, Flask and Django adapters (401). Only a declared length is searched now."""
    token = idp.issue(alg="ES256", scope="read")
    guard = idp.guard(allow_form_token=True)
    form = {"Content-Type": URLENCODED}
    if name == "django":
        from django.core.wsgi import get_wsgi_application

        server: Any = WSGIServer(get_wsgi_application())
        settings = _project(guard, True)
    else:
        server = Served(name, idp)(guard, allow_form_token=True)
        settings = override_settings()
    with settings, server:
        hidden = httpx.post(f"{server.url}/books", content=_chunked(f"access_token={token}".encode()), headers=form)
        assert hidden.status_code == 401, hidden.text
        assert parse_challenges(hidden.headers["www-authenticate"])[0].error is None
        declared = httpx.post(f"{server.url}/books", content=f"access_token={token}".encode(), headers=form)
        assert declared.status_code == 200, declared.text


def test_django_form_over_limit_not_searched(idp: LocalIssuer) -> None:
    """As in every other adapter, a form body over 64 KiB is not searched for a token."""
    token = idp.issue(alg="ES256", scope="read")
    with _project(idp.guard(allow_form_token=True), True):
        small = Client().post("/books", urlencode({"access_token": token}), content_type=URLENCODED)
        assert small.status_code == 200
        big = urlencode({"title": "x" * (70 * 1024), "access_token": token})
        hidden = Client().post("/books", big, content_type=URLENCODED)
    assert hidden.status_code == 401
    assert parse_challenges(hidden["WWW-Authenticate"])[0].error is None


# ---------------------------------------------------------------- scope names


def test_invalid_scopes_refused_before_being_declared(idp: LocalIssuer) -> None:
    """requires([...]) raised TypeError (unhashable list) from declare_scopes, and a bad
    name was declared (RFC 9728 document) before being refused."""
    guard = idp.guard()
    with pytest.raises(ConfigurationError, match="scope names must be strings"):
        guard.requires(["read", "write"])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        guard.requires("read books")
    with pytest.raises(ConfigurationError):
        guard.declare_scopes("read", 'bad"quote')
    assert guard.route_scopes == frozenset()
    guard.requires("read")
    assert guard.route_scopes == {"read"}


# ---------------------------------------------------------------- form tokens without the middleware


def _dependency_app(guard: TokenGuard) -> Any:
    from fastapi import Form, Security

    app = FastAPI()
    setup(app, guard)

    @app.post("/books")
    async def books(title: str = Form(""), claims: Any = Security(guard.requires("read"))) -> dict[str, Any]:
        return {"sub": claims.subject, "title": title}

    return app


def _decorator_app(guard: TokenGuard) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tokenguard.starlette import requires as starlette_requires

    @starlette_requires(guard, "read")
    async def books(request: Request) -> JSONResponse:
        form = await request.form()
        return JSONResponse({"sub": request.scope["tokenguard"].subject, "title": form.get("title", "")})

    return Starlette(routes=[Route("/books", books, methods=["POST"])])


@pytest.mark.parametrize("make", [_dependency_app, _decorator_app], ids=["fastapi-dependency", "starlette-decorator"])
def test_form_token_found_without_the_middleware(idp: LocalIssuer, make: Any) -> None:
    """With allow_form_token, a route protected only by guard.requires() (or the Starlette
    decorator) answered 401 to a form token the middleware and the WSGI, Flask and Django
    adapters accept; the endpoint still reads the whole form."""
    token = idp.issue(alg="ES256", scope="read")
    with UvicornServer(make(idp.guard(allow_form_token=True))) as server:
        found = httpx.post(f"{server.url}/books", data={"access_token": token, "title": "Dune"})
        assert found.status_code == 200, found.text
        assert found.json() == {"sub": "user-1", "title": "Dune"}
        both = httpx.post(
            f"{server.url}/books", data={"access_token": token}, headers={"Authorization": f"Bearer {token}"}
        )
        assert both.status_code == 400
        hidden = httpx.post(
            f"{server.url}/books",
            content=_chunked(f"access_token={token}".encode()),
            headers={"Content-Type": URLENCODED},
        )
        assert hidden.status_code == 401
    with UvicornServer(make(idp.guard())) as server:
        # Not allowed: the body is not looked at, as in every adapter.
        plain = httpx.post(
            f"{server.url}/books", data={"access_token": token}, headers={"Authorization": f"Bearer {token}"}
        )
        assert plain.status_code == 200


# ---------------------------------------------------------------- Flask: errors name what the user wrote


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"TOKENGUARD_PUBLIC_PATHS": "health"}, "TOKENGUARD_PUBLIC_PATHS"),
        ({"TOKENGUARD_PUBLIC_PATHS": "/health,/static/../admin"}, "TOKENGUARD_PUBLIC_PATHS"),
        ({"TOKENGUARD_PUBLIC_PREFIXES": ["static"]}, "TOKENGUARD_PUBLIC_PREFIXES"),
    ],
)
def test_flask_config_errors_name_the_config_key(idp: LocalIssuer, config: dict[str, Any], named: str) -> None:
    """A bad TOKENGUARD_PUBLIC_* value was reported as 'public_paths'/'public_prefixes', names the
    Flask user never wrote."""
    from flask import Flask

    from tokenguard.flask import FlaskTokenGuard

    app = Flask(__name__)
    app.config.update(config)
    with pytest.raises(ConfigurationError) as raised:
        FlaskTokenGuard(app, idp.guard())
    assert str(raised.value).startswith(named)


def test_flask_protect_all_error_names_protect_all(idp: LocalIssuer) -> None:
    from flask import Flask

    from tokenguard.flask import FlaskTokenGuard

    with pytest.raises(ConfigurationError, match="^protect_all must be True or False"):
        FlaskTokenGuard(Flask(__name__), idp.guard(), protect_all="yes")  # type: ignore[arg-type]


# ---------------------------------------------------------------- FastAPI docs URLs: the docs, not the path


def test_fastapi_docs_exemption_covers_only_the_docs_pages(idp: LocalIssuer) -> None:
    """With docs_url="/" an app's own POST / (or a websocket at /openapi.json) was public:
    the docs URLs were exempt for every method, while FastAPI serves them only to GET."""
    from fastapi import WebSocket

    app = FastAPI(docs_url="/")
    setup(app, idp.guard(), middleware=True)

    @app.post("/")
    async def create() -> dict[str, str]:
        return {"created": "yes"}

    @app.websocket("/openapi.json")
    async def socket(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    with UvicornServer(app) as server:
        assert httpx.get(f"{server.url}/").status_code == 200
        assert httpx.get(f"{server.url}/openapi.json").status_code == 200
        assert httpx.post(f"{server.url}/").status_code == 401
        upgrade = {
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        }
        assert httpx.get(f"{server.url}/openapi.json", headers=upgrade).status_code == 403


# ---------------------------------------------------------------- configuration values checked at construction


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_token_bytes", "8192"),
        ("max_token_bytes", 0),
        ("max_token_bytes", True),
        ("hash_key", "a-string-secret-of-32-characters"),
        ("realm", 5),
        ("leeway", "30"),
        ("leeway", float("nan")),
        ("max_token_age", "3600"),
        ("max_token_age", 0),
    ],
)
def test_guard_values_of_the_wrong_type_name_the_option(idp: LocalIssuer, option: str, value: object) -> None:
    """A string for max_token_bytes was accepted and every request then failed with TypeError
    inside the Authorization parser (a 500); hash_key as str and leeway as str raised TypeError."""
    from tokenguard import JWTIssuer
    from tokenguard.sources import FetchSettings

    if option in ("leeway", "max_token_age"):
        issuer = JWTIssuer(
            issuer=idp.issuer,
            audience="https://api.test",
            jwks_uri=idp.jwks_uri,
            fetch=FetchSettings(),
            **{option: value},
        )
        make = lambda: TokenGuard(issuers=[issuer])  # noqa: E731
    else:
        make = lambda: idp.guard(**{option: value})  # noqa: E731
    with pytest.raises(ConfigurationError, match=f"^{option} must be"):
        make()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_keys", "100"),
        ("max_keys", 0),
        ("max_response_bytes", 1.5),
        ("default_ttl", "600"),
        ("max_staleness", -1),
        ("require_https", "false"),
    ],
)
def test_fetch_settings_values_checked(option: str, value: object) -> None:
    from tokenguard.sources import FetchSettings

    with pytest.raises(ConfigurationError, match=f"^{option} must be"):
        FetchSettings(**{option: value})


# ---------------------------------------------------------------- Django public paths: the rules of every adapter


def test_django_path_rules_agree_with_the_adapter_options() -> None:
    """Django's PathRules made /static/%2e%2e/admin public (the other adapters never do) and
    accepted entries holding dot-segments, which AdapterOptions refuses."""
    from tokenguard.django import PathRules

    rules = PathRules(["/health"], ["/static"])
    options = AdapterOptions(public_paths=["/health"], public_prefixes=["/static"])
    for tried in (
        "/static/%2e%2e/admin",
        "/static/%2E%2E/admin",
        "/static/./a",
        "/static/a.css",
        "/health",
        "/healthz",
    ):
        assert rules.is_public(tried) is options.is_public(tried), tried
    for bad in (["/static/../admin"], ["/a/%2e%2e"]):
        with pytest.raises(ConfigurationError, match="TOKENGUARD_PUBLIC_PREFIXES"):
            PathRules((), bad)
        with pytest.raises(ConfigurationError, match="'.' or '..'"):
            AdapterOptions(public_prefixes=bad)


# ---------------------------------------------------------------- Flask: one extension, several apps


def test_flask_extension_keeps_each_apps_options_and_guard(idp: LocalIssuer) -> None:
    """With the application-factory pattern (one FlaskTokenGuard, init_app per app), the last
    app's options and the first app's guard applied to every app: app2's public /admin became
    public in app1, and app2's own issuer was never used."""
    from flask import Flask

    from tokenguard.flask import FlaskTokenGuard

    tg = FlaskTokenGuard()

    def make(issuer: LocalIssuer, public: str) -> Flask:
        app = Flask(__name__)
        app.config.update(
            TOKENGUARD_ISSUER=issuer.issuer, TOKENGUARD_AUDIENCE="https://api.test", TOKENGUARD_PUBLIC_PATHS=public
        )
        tg.init_app(app)

        @app.get("/admin")
        @app.get("/books")
        def view() -> dict[str, str]:
            return {"ok": "yes"}

        return app

    with LocalIssuer(algorithms=("ES256",)) as other:
        apps = [make(idp, "/health"), make(other, "/health,/admin")]
        first, second = (app.test_client() for app in apps)
        assert first.get("/admin").status_code == 401
        assert second.get("/admin").status_code == 200
        mine = idp.issue(alg="ES256", scope="read")
        theirs = other.issue(alg="ES256", scope="read")
        assert first.get("/books", headers={"Authorization": f"Bearer {mine}"}).status_code == 200
        assert second.get("/books", headers={"Authorization": f"Bearer {theirs}"}).status_code == 200
        assert first.get("/books", headers={"Authorization": f"Bearer {theirs}"}).status_code == 401
        for app in apps:
            app.extensions["tokenguard.state"][2].close()  # built from the config: ours to close


@pytest.mark.parametrize("middleware", [True, False], ids=["middleware", "no-middleware"])
def test_django_sends_a_fresh_dpop_nonce_on_success(idp: LocalIssuer, middleware: bool) -> None:
    """RFC 9449 §8.2: the server may send a fresh nonce with every answer; the Django adapters
    dropped the verdict's response headers, as the other adapters do not."""
    from tokenguard.nonce import DPoPNonces

    guard = idp.guard(dpop=DPoPSettings(nonces=DPoPNonces(b"n" * 32, lifetime=60)))
    client_key = DPoPClient()
    token = idp.issue(alg="ES256", scope="read", extra_claims={"cnf": {"jkt": client_key.key.thumbprint()}})
    htu = "http://testserver/books"
    with _project(guard, middleware):
        first = Client().get(
            "/books", HTTP_AUTHORIZATION=f"DPoP {token}", HTTP_DPOP=client_key.proof("GET", htu, token)
        )
        assert first.status_code == 401 and first.has_header("DPoP-Nonce")
        proof = client_key.proof("GET", htu, token, nonce=first["DPoP-Nonce"])
        second = Client().get("/books", HTTP_AUTHORIZATION=f"DPoP {token}", HTTP_DPOP=proof)
    assert second.status_code == 200, second.content
    assert second.has_header("DPoP-Nonce")
