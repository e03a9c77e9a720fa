"""Secure by default at the edges: adapters, configuration values and token kinds.

Adapters are driven through real servers on loopback (uvicorn for Starlette
and FastAPI, a threaded Werkzeug server for Flask and plain WSGI) and the
real :class:`~tokenguard.testing.LocalIssuer`.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from flask import Flask, request
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route
from werkzeug.wrappers import Request as WerkzeugRequest

from tokenguard import ConfigurationError, JWTIssuer, TokenGuard, parse_challenges
from tokenguard.bearer import parameter_tokens
from tokenguard.errors import InvalidToken
from tokenguard.fastapi import setup
from tokenguard.flask import FlaskTokenGuard, current_token
from tokenguard.keys import MAX_CANDIDATE_KEYS, KeySet, VerificationKey, parse_jwks
from tokenguard.options import AdapterOptions, has_dot_segment, path_in_app
from tokenguard.response import MAX_WARNED_PATHS, ResponsePolicy
from tokenguard.sources import check_url, is_loopback_host
from tokenguard.starlette import TokenGuardMiddleware
from tokenguard.testing import Fault, LocalIssuer
from tokenguard.wsgi import CLAIMS_KEY, TokenGuardWSGIMiddleware

from .conftest import API, UvicornServer, WSGIServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def idp() -> Iterator[LocalIssuer]:
    with LocalIssuer(algorithms=("ES256",)) as issuer:
        yield issuer


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def raw_get(url: str, target: str, headers: dict[str, str] | None = None) -> int:
    """GET with the request target sent byte for byte (httpx would normalise dot-segments)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        connection.putrequest("GET", target, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


# ---------------------------------------------------------------- the four stacks


def _starlette(guard: TokenGuard, **options: Any) -> Any:
    async def echo(request: Request) -> JSONResponse:
        claims = request.scope.get("tokenguard")
        form = dict(parse_qsl((await request.body()).decode())) if request.method == "POST" else {}
        return JSONResponse({"sub": claims.subject if claims else None, "form": form})

    routes = [Route(p, echo, methods=["GET", "POST"]) for p in ("/", "/books", "/health", "/docs", "/admin")]
    routes.append(Route("/static/{rest:path}", echo))
    routes.append(Route("/staticfiles-admin", echo))
    return TokenGuardMiddleware(Starlette(routes=routes), guard, **options)


def _fastapi(guard: TokenGuard, **options: Any) -> Any:
    app = FastAPI()
    setup(app, guard, middleware=True, **options)

    @app.api_route("/books", methods=["GET", "POST"], include_in_schema=False)
    async def books(request: Request) -> dict[str, Any]:
        claims = request.scope.get("tokenguard")
        form = dict(parse_qsl((await request.body()).decode())) if request.method == "POST" else {}
        return {"sub": claims.subject if claims else None, "form": form}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/staticfiles-admin")
    async def staticfiles_admin() -> dict[str, str]:
        return {"admin": "yes"}

    return app


def _flask(guard: TokenGuard, **options: Any) -> Any:
    app = Flask(__name__)
    FlaskTokenGuard(app, guard, **options)

    @app.route("/books", methods=["GET", "POST"])
    @app.route("/health")
    @app.route("/staticfiles-admin")
    @app.route("/admin")
    def books() -> dict[str, Any]:
        claims = request.environ.get(CLAIMS_KEY)
        return {"sub": claims.subject if claims else None, "form": request.form.to_dict()}

    return app


def _wsgi(guard: TokenGuard, **options: Any) -> Any:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        claims = environ[CLAIMS_KEY]
        form = WerkzeugRequest(environ).form.to_dict()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"sub": claims.subject if claims else None, "form": form}).encode()]

    return TokenGuardWSGIMiddleware(app, guard, **options)


STACKS: dict[str, Callable[..., Any]] = {"starlette": _starlette, "fastapi": _fastapi, "flask": _flask, "wsgi": _wsgi}


class Served:
    def __init__(self, name: str, idp: LocalIssuer) -> None:
        self.name = name
        self.idp = idp

    def __call__(self, guard: TokenGuard | None = None, **options: Any) -> Any:
        app = STACKS[self.name](guard or self.idp.guard(), **options)
        return UvicornServer(app) if self.name in ("starlette", "fastapi") else WSGIServer(app)


@pytest.fixture(params=list(STACKS))
def stack(request: pytest.FixtureRequest, idp: LocalIssuer) -> Served:
    """Builds the named stack with the given adapter options, served on loopback."""
    return Served(request.param, idp)


# ---------------------------------------------------------------- query and form tokens


def test_percent_encoded_query_name_counts_as_a_second_token(stack: Served, idp: LocalIssuer) -> None:
    """?access%5Ftoken=T beside a header token is 400 in every adapter, as ?access_token=T is."""
    token = idp.issue(alg="ES256", scope="read")
    with stack() as server:
        for query in ("access_token", "access%5Ftoken", "%61ccess_token", "access%5ftoken"):
            response = httpx.get(f"{server.url}/books?{query}={token}", headers=bearer(token))
            assert response.status_code == 400, query
            assert response.json()["error"] == "invalid_request"
        assert httpx.get(f"{server.url}/books?access%5Ftoken={token}").status_code == 400
        assert httpx.get(f"{server.url}/books", headers=bearer(token)).status_code == 200


def test_percent_encoded_query_token_accepted_when_allowed(stack: Served, idp: LocalIssuer) -> None:
    """With query tokens allowed, the decoded name finds the token in every adapter."""
    token = idp.issue(alg="ES256", scope="read")
    with stack(allow_query_token=True) as server:
        response = httpx.get(f"{server.url}/books?access%5Ftoken={token}")
        assert response.status_code == 200 and response.json()["sub"] == "user-1"


def test_form_token_body_is_replayed_to_the_app(stack: Served, idp: LocalIssuer) -> None:
    """With form tokens allowed, the app still reads the whole form (WSGI input replayed)."""
    token = idp.issue(alg="ES256", scope="read")
    with stack(allow_form_token=True) as server:
        response = httpx.post(f"{server.url}/books", data={"access_token": token, "title": "Dune"})
        assert response.status_code == 200, response.text
        assert response.json() == {"sub": "user-1", "form": {"access_token": token, "title": "Dune"}}
        both = httpx.post(f"{server.url}/books", data={"access_token": token}, headers=bearer(token))
        assert both.status_code == 400
        encoded = httpx.post(
            f"{server.url}/books",
            content=f"access%5Ftoken={token}".encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded", **bearer(token)},
        )
        assert encoded.status_code == 400


def test_form_token_refused_when_not_allowed(stack: Served, idp: LocalIssuer) -> None:
    """Without allow_form_token the body is not read, and the app gets it intact."""
    token = idp.issue(alg="ES256", scope="read")
    with stack() as server:
        response = httpx.post(f"{server.url}/books", data={"title": "Dune"}, headers=bearer(token))
        assert response.status_code == 200 and response.json()["form"] == {"title": "Dune"}


@given(st.lists(st.tuples(st.text(max_size=12), st.text(max_size=12)), max_size=6))
def test_parameter_tokens_agree_with_werkzeug(pairs: list[tuple[str, str]]) -> None:
    """parameter_tokens() finds exactly what werkzeug's request.args finds, for any encoded query."""
    from urllib.parse import urlencode

    query = urlencode(pairs)
    expected = WerkzeugRequest.from_values(query_string=query).args.getlist("access_token")
    assert parameter_tokens(query.encode()) == expected
    assert parameter_tokens(query) == expected


@given(st.binary(max_size=64))
def test_parameter_tokens_never_crash(raw: bytes) -> None:
    """Any bytes give a list of strings."""
    assert all(isinstance(v, str) for v in parameter_tokens(raw))


# ---------------------------------------------------------------- public paths


def test_nothing_is_public_by_default(stack: Served) -> None:
    """No adapter exempts /health or /docs unless the application says so."""
    with stack() as server:
        assert httpx.get(f"{server.url}/health").status_code == 401


def test_bare_string_public_paths_refused(stack: Served, idp: LocalIssuer) -> None:
    """public_paths=("/health") (a str) is a ConfigurationError naming the option, in every adapter."""
    for option, value in (("public_paths", ("/health")), ("public_prefixes", "/static")):
        with pytest.raises(ConfigurationError, match=option):
            app = STACKS[stack.name](idp.guard(), **{option: value})
            if isinstance(app, FastAPI):
                app.build_middleware_stack()  # Starlette builds middleware on first use


def test_prefixes_match_whole_segments(stack: Served, idp: LocalIssuer) -> None:
    """public_prefixes=("/static",) does not exempt /staticfiles-admin, nor /static/../admin."""
    token = idp.issue(alg="ES256", scope="read")
    with stack(public_prefixes=("/static",), public_paths=("/health",)) as server:
        assert httpx.get(f"{server.url}/staticfiles-admin").status_code == 401
        assert httpx.get(f"{server.url}/staticfiles-admin", headers=bearer(token)).status_code == 200
        assert httpx.get(f"{server.url}/health").status_code == 200
        for target in ("/static/../admin", "/static/%2e%2e/admin", "/static/./../admin", "/health/.."):
            assert raw_get(server.url, target) in (308, 400, 401, 404), target


def test_starlette_docs_not_public_on_a_plain_app(idp: LocalIssuer) -> None:
    """On a plain Starlette app, /docs is an ordinary (protected) route."""
    with UvicornServer(_starlette(idp.guard())) as server:
        assert httpx.get(f"{server.url}/docs").status_code == 401


def test_fastapi_docs_public_only_when_served(idp: LocalIssuer) -> None:
    """FastAPI's docs URLs are read from the app: public when served, protected when turned off or moved."""
    with UvicornServer(_fastapi(idp.guard())) as server:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
            assert httpx.get(f"{server.url}{path}").status_code == 200, path
    guard = idp.guard()
    moved = FastAPI(docs_url="/api-docs", redoc_url=None)
    moved.add_middleware(TokenGuardMiddleware, guard=guard)
    with UvicornServer(moved) as server:
        assert httpx.get(f"{server.url}/api-docs").status_code == 200
        assert httpx.get(f"{server.url}/docs").status_code == 401
        assert httpx.get(f"{server.url}/redoc").status_code == 401
    hidden = FastAPI(openapi_url=None)
    hidden.add_middleware(TokenGuardMiddleware, guard=guard)
    with UvicornServer(hidden) as server:
        assert httpx.get(f"{server.url}/docs").status_code == 401
        assert httpx.get(f"{server.url}/openapi.json").status_code == 401
    opted_out = FastAPI()
    opted_out.add_middleware(TokenGuardMiddleware, guard=guard, public_docs=False)
    with UvicornServer(opted_out) as server:
        assert httpx.get(f"{server.url}/docs").status_code == 401


def test_parent_docs_urls_do_not_exempt_a_mounted_app(idp: LocalIssuer) -> None:
    """A sub-app mounted in a FastAPI app does not inherit the parent's /docs exemption."""
    parent = FastAPI()
    parent.mount("/api", _starlette(idp.guard()))
    wrapped = FastAPI()
    with UvicornServer(parent) as server:
        assert httpx.get(f"{server.url}/docs").status_code == 200
        assert httpx.get(f"{server.url}/api/docs").status_code == 401
    with UvicornServer(TokenGuardMiddleware(wrapped, idp.guard())) as server:
        assert httpx.get(f"{server.url}/docs").status_code == 200
        assert httpx.get(f"{server.url}/other").status_code == 401


def test_mounted_app_compares_paths_relative_to_the_mount(idp: LocalIssuer) -> None:
    """A middleware inside Mount("/api") treats /api/health as its /health."""
    inner = _starlette(idp.guard(), public_paths=("/health",))
    outer = Starlette(routes=[Mount("/api", app=inner)])
    with UvicornServer(outer) as server:
        assert httpx.get(f"{server.url}/api/health").status_code == 200
        assert httpx.get(f"{server.url}/api/books").status_code == 401


def test_wsgi_mounted_under_script_name(idp: LocalIssuer) -> None:
    """Under a SCRIPT_NAME, public paths are relative to the mount, as PATH_INFO is."""
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from werkzeug.test import Client

    inner = _wsgi(idp.guard(), public_paths=("/health",))
    client = Client(DispatcherMiddleware(lambda e, s: [], {"/api": inner}))
    assert client.get("/api/health").status_code == 200
    assert client.get("/api/books").status_code == 401


@pytest.mark.parametrize(
    ("path", "public"),
    [
        ("/health", True),
        ("/health/", False),
        ("/static", True),
        ("/static/app.css", True),
        ("/static/", True),
        ("/staticfiles", False),
        ("/static/../admin", False),
        ("/static/%2E%2E/admin", False),
        ("/static/./x", False),
        ("/", False),
        ("", False),
        ("//health", False),
    ],
)
def test_is_public_table(path: str, public: bool) -> None:
    """Exact paths, whole-segment prefixes, dot-segments never public."""
    options = AdapterOptions(public_paths=("/health",), public_prefixes=("/static/",))
    assert options.is_public(path) is public


@given(st.lists(st.sampled_from(["static", "..", ".", "%2e%2e", "a", ""]), max_size=6))
def test_dot_segments_are_never_public(segments: list[str]) -> None:
    """Any path holding a dot-segment is protected, whatever the prefixes."""
    path = "/" + "/".join(segments)
    options = AdapterOptions(public_prefixes=("/static",))
    if has_dot_segment(path):
        assert not options.is_public(path)
    elif options.is_public(path):
        assert path == "/static" or path.startswith("/static/")


def test_path_in_app() -> None:
    """The mount point is stripped only at a segment boundary."""
    assert path_in_app("/api/health", "/api") == "/health"
    assert path_in_app("/api", "/api") == "/"
    assert path_in_app("/apiary/health", "/api") == "/apiary/health"
    assert path_in_app("/health", "") == "/health"


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"public_paths": "/health"}, "public_paths"),
        ({"public_paths": ["health"]}, "public_paths"),
        ({"public_paths": ["/a/../b"]}, "public_paths"),
        ({"public_prefixes": [1]}, "public_prefixes"),
        ({"protect": "yes"}, "protect"),
        ({"allow_query_token": "no"}, "allow_query_token"),
        ({"public_cache_policy": "public"}, "public_cache_policy"),
    ],
)
def test_adapter_options_validated(kwargs: dict[str, Any], option: str) -> None:
    """Invalid adapter options are refused at construction, naming the option."""
    with pytest.raises(ConfigurationError, match=option):
        AdapterOptions(**kwargs)


def test_options_object_and_keywords_not_both(idp: LocalIssuer) -> None:
    """An options object and loose keywords together are refused (which would win is unclear)."""
    guard = idp.guard()
    with pytest.raises(ConfigurationError, match="protect"):
        TokenGuardMiddleware(Starlette(), guard, options=AdapterOptions(), protect=False)
    with pytest.raises(ConfigurationError, match="public_paths"):
        TokenGuardWSGIMiddleware(lambda e, s: [], guard, options=AdapterOptions(), public_paths=("/x",))
    with pytest.raises(ConfigurationError, match="protect"):
        FlaskTokenGuard(Flask(__name__), guard, options=AdapterOptions(), protect_all=True)


# ---------------------------------------------------------------- Flask


def test_flask_claims_do_not_outlive_the_request(idp: LocalIssuer) -> None:
    """Inside an outer app_context, a request without a token after an admin request is refused."""
    for protect in (True, False):
        app = Flask(__name__)
        tg = FlaskTokenGuard(app, idp.guard(), protect_all=protect)

        @app.get("/admin")
        @tg.requires("admin")
        def admin() -> dict[str, Any]:
            return {"sub": current_token.subject}

        client = app.test_client()
        with app.app_context():
            ok = client.get("/admin", headers=bearer(idp.issue(alg="ES256", scope="admin")))
            assert ok.status_code == 200
            assert client.get("/admin").status_code == 401
            reader = client.get("/admin", headers=bearer(idp.issue(alg="ES256", scope="read")))
            assert reader.status_code == 403


@pytest.mark.parametrize(("value", "expected"), [("false", False), ("0", False), ("no", False), ("OFF", False),
                                                 ("true", True), ("1", True), ("yes", True), (True, True)])  # fmt: skip
def test_flask_booleans_parsed(idp: LocalIssuer, value: object, expected: bool) -> None:
    """TOKENGUARD_PROTECT_ALL / ALLOW_QUERY_TOKEN as strings mean what they say."""
    app = Flask(__name__)
    app.config.update(TOKENGUARD_PROTECT_ALL=value, TOKENGUARD_ALLOW_QUERY_TOKEN=value)
    tg = FlaskTokenGuard(app, idp.guard())
    assert tg.options.protect is expected
    assert tg.options.allow_query_token is expected

    @app.get("/open")
    def open_route() -> str:
        return "open"

    assert app.test_client().get("/open").status_code == (401 if expected else 200)


@pytest.mark.parametrize("value", ["maybe", "2", 2, "tru", [True]])
def test_flask_unknown_boolean_is_an_error(idp: LocalIssuer, value: object) -> None:
    """An unparseable boolean names the config key."""
    app = Flask(__name__)
    app.config["TOKENGUARD_PROTECT_ALL"] = value
    with pytest.raises(ConfigurationError, match="TOKENGUARD_PROTECT_ALL"):
        FlaskTokenGuard(app, idp.guard())


def test_flask_public_paths_string_is_one_list(idp: LocalIssuer) -> None:
    """TOKENGUARD_PUBLIC_PATHS="/health" is the path /health (comma-separated), never "/" and friends."""
    app = Flask(__name__)
    app.config["TOKENGUARD_PUBLIC_PATHS"] = "/health"
    app.config["TOKENGUARD_PUBLIC_PREFIXES"] = "/static, /assets"
    tg = FlaskTokenGuard(app, idp.guard())

    @app.get("/")
    @app.get("/health")
    @app.get("/h")
    def index() -> str:
        return "x"

    client = app.test_client()
    assert client.get("/health").status_code == 200
    assert client.get("/").status_code == 401
    assert client.get("/h").status_code == 401
    assert tg.options.public_prefixes == ("/static", "/assets")


# ---------------------------------------------------------------- configuration values


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("algorithms", "RS256"),
        ("required_claims", "sub"),
        ("token_types", "at+jwt"),
        ("scope_claims", "scp"),
        ("audience", ["ok", 5]),
        ("audience", []),
    ],
)
def test_bare_string_for_a_sequence_names_the_option(idp: LocalIssuer, option: str, value: object) -> None:
    """algorithms="RS256" and friends are refused with the option's name, not a list of letters."""
    options: dict[str, Any] = {"audience": API, option: value}
    with pytest.raises(ConfigurationError, match=option):
        TokenGuard.from_issuer(idp.issuer, fetch=None, **options)


def test_bare_string_keys_and_issuers(idp: LocalIssuer) -> None:
    """keys="-----BEGIN..." and a lone JWTIssuer are refused with a clear message."""
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ConfigurationError, match="keys"):
        TokenGuard.from_keys(issuer="https://i.example", audience=API, keys=pem.decode())
    with pytest.raises(ConfigurationError, match="issuers"):
        TokenGuard(JWTIssuer("https://i.example", audience=API, keys=[pem]))  # type: ignore[arg-type]


def test_audience_none_warns(idp: LocalIssuer, caplog: pytest.LogCaptureFixture) -> None:
    """audience=None is allowed, with a WARNING at construction naming the issuer."""
    with caplog.at_level(logging.WARNING, logger="tokenguard"):
        guard = idp.guard(audience=None)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "audience=None" in r.getMessage()]
    assert len(warnings) == 1 and idp.issuer in warnings[0].getMessage()
    # And it really is off: an ID token (aud = client id) would pass.
    assert guard.verify_sync(idp.issue(alg="ES256", audience="some-client")).subject == "user-1"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("::1", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.attacker.example", False),
        ("127.0.0.1.nip.io", False),
        ("localhost.attacker.example", False),
        ("128.0.0.1", False),
        ("::ffff:8.8.8.8", False),
        (None, False),
    ],
)
def test_loopback_by_address_or_exactly_localhost(host: str | None, loopback: bool) -> None:
    """Plain http is tolerated only for 127.0.0.0/8, ::1 or exactly localhost."""
    assert is_loopback_host(host) is loopback


def test_http_issuer_with_loopback_looking_name_refused() -> None:
    """http://127.attacker.example is refused even though it starts with 127."""
    with pytest.raises(ConfigurationError, match="https"):
        check_url("http://127.attacker.example/", require_https=True, what="issuer")
    with pytest.raises(ConfigurationError, match="https"):
        TokenGuard.from_issuer("http://127.attacker.example", audience=API)
    assert check_url("http://[::1]:8080/x", require_https=True, what="issuer")


def _private_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_repr_never_shows_key_material() -> None:
    """repr() of a JWTIssuer (and the guard) shows no PEM, no JWK members, no HMAC secret."""
    public_pem = (
        _private_rsa()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    secret = b"k" * 40
    k = base64.urlsafe_b64encode(b"s" * 40).rstrip(b"=").decode()
    issuer = JWTIssuer(
        "https://i.example",
        audience=API,
        keys=[public_pem],
        jwks={"keys": [{"kty": "oct", "k": k, "kid": "h"}]},
        hmac_keys={"h2": secret},
        algorithms=["HS256", "RS256"],
    )
    text = repr(issuer)
    assert "BEGIN" not in text and k not in text and "kkkk" not in text
    guard = TokenGuard([issuer])
    assert k not in repr(guard) and "BEGIN" not in repr(guard)


def test_private_key_where_public_expected_is_refused() -> None:
    """Private keys are refused (PEM, cryptography object, JWK with d), with a clear error."""
    private = _private_rsa()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    jwk = json.loads(__import__("jwt").algorithms.RSAAlgorithm.to_jwk(private))
    for key in (pem, pem.decode(), private, jwk):
        with pytest.raises(ConfigurationError, match="private") as info:
            TokenGuard.from_keys(issuer="https://i.example", audience=API, keys=[key])
        assert "BEGIN" not in str(info.value) and jwk["d"] not in str(info.value)
    with pytest.raises(ConfigurationError, match="private"):
        TokenGuard.from_keys(issuer="https://i.example", audience=API, jwks={"keys": [jwk]})


# ---------------------------------------------------------------- token kinds


@pytest.mark.parametrize(
    "typ",
    [
        "dpop+jwt",
        "secevent+jwt",
        "logout+jwt",
        "application/logout+jwt",
        "id_token+jwt",
        "JWE",
        "Token-Introspection+JWT",
    ],
)
def test_other_kinds_of_jwt_refused_through_the_adapters(stack: Served, idp: LocalIssuer, typ: str) -> None:
    """A JWT typed as another kind is 401 invalid_token by default in every adapter."""
    token = idp.issue(alg="ES256", scope="read", typ=typ)
    with stack() as server:
        response = httpx.get(f"{server.url}/books", headers=bearer(token))
        assert response.status_code == 401
        assert response.json() == {"error": "invalid_token", "error_description": "wrong token type"}


@pytest.mark.parametrize("typ", ["at+jwt", "application/at+jwt", "JWT", "jwt", None])
def test_access_token_types_accepted_by_default(idp: LocalIssuer, typ: str | None) -> None:
    """By default at+jwt, JWT and no typ at all pass (many providers send no typ)."""
    guard = idp.guard()
    # PyJWT writes typ JWT unless the header says typ None: then there is none.
    assert guard.verify_sync(idp.issue(alg="ES256", headers={"typ": typ})).subject == "user-1"


def test_token_types_lists_accepted_values_and_absent(idp: LocalIssuer) -> None:
    """token_types=("at+jwt",) refuses JWT and absent typ; adding None accepts an absent one."""
    strict = idp.guard(token_types=("at+jwt",))
    assert strict.verify_sync(idp.issue(alg="ES256")).subject == "user-1"
    for headers in ({"typ": "JWT"}, {"typ": None}, {"typ": "dpop+jwt"}):
        with pytest.raises(InvalidToken, match="wrong token type"):
            strict.verify_sync(idp.issue(alg="ES256", headers=headers))
    lenient = idp.guard(token_types=("at+jwt", None))
    assert lenient.verify_sync(idp.issue(alg="ES256", headers={"typ": None})).subject == "user-1"
    with pytest.raises(InvalidToken):
        lenient.verify_sync(idp.issue(alg="ES256", typ="JWT"))


@pytest.mark.parametrize(
    "cnf",
    [
        {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"},
        {"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN"},
        "jkt",
    ],
)
def test_sender_constrained_jwt_refused_as_bearer(stack: Served, idp: LocalIssuer, cnf: Any) -> None:
    """A JWT with cnf.jkt / cnf.x5t#S256 presented as Bearer is 401 invalid_token."""
    token = idp.issue(alg="ES256", scope="read", extra_claims={"cnf": cnf})
    with stack() as server:
        response = httpx.get(f"{server.url}/books", headers=bearer(token))
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_token"


def test_sender_constrained_introspection_answer_refused(stack: Served, idp: LocalIssuer) -> None:
    """An introspection answer with cnf.jkt is refused as well; a plain one passes."""
    bound = idp.issue_opaque(scope="read", extra_claims={"cnf": {"jkt": "abc"}})
    plain = idp.issue_opaque(scope="read")
    with stack() as server:
        response = httpx.get(f"{server.url}/books", headers=bearer(bound))
        assert response.status_code == 401 and response.json()["error"] == "invalid_token"
        assert httpx.get(f"{server.url}/books", headers=bearer(plain)).status_code == 200


def test_proof_of_possession_switch_accepts_bound_tokens(idp: LocalIssuer) -> None:
    """proof_of_possession=True (a DPoP/mTLS check elsewhere) lets bound tokens through."""
    guard = idp.guard(proof_of_possession=True)
    assert guard.verify_sync(idp.issue(alg="ES256", extra_claims={"cnf": {"jkt": "abc"}}))["cnf"] == {"jkt": "abc"}
    assert guard.verify_sync(idp.issue_opaque(extra_claims={"cnf": {"x5t#S256": "abc"}})).subject == "user-1"
    with pytest.raises(ConfigurationError, match="proof_of_possession"):
        idp.guard(proof_of_possession="yes")
    # A cnf that binds to nothing we know of (RFC 7800 jwk by value is not in scope) passes by default.
    assert idp.guard().verify_sync(idp.issue(alg="ES256", extra_claims={"cnf": {"kid": "k"}})).subject == "user-1"


def test_custom_verifier_claims_checked_too(idp: LocalIssuer) -> None:
    """A custom verifier's bound claims are refused like any other."""
    guard = TokenGuard(verifier=lambda token: {"sub": "x", "cnf": {"jkt": "a"}})
    with pytest.raises(InvalidToken, match="sender-constrained"):
        guard.verify_sync("opaque-token")


@pytest.mark.parametrize("where", ["claim", "header", "key"])
def test_lone_surrogates_refused(stack: Served, idp: LocalIssuer, where: str) -> None:
    """A JSON string with an unpaired surrogate in header or claims is 401 in every adapter."""
    if where == "claim":
        token = idp.issue(alg="ES256", scope="read", extra_claims={"name": "\ud800"})
    elif where == "header":
        token = idp.issue(alg="ES256", scope="read", headers={"x": "a\udfffb"})
    else:
        token = idp.issue(alg="ES256", scope="read", extra_claims={"\udc00": 1})
    paired = idp.issue(alg="ES256", scope="read", extra_claims={"name": "\ud83d\ude00"})
    # With introspection configured, a token whose header does not parse goes
    # to the authorization server, which may vouch for it: its claims are
    # checked the same way (the "claim" and "key" cases cover that path).
    guard = idp.guard(introspection=where != "header")
    with stack(guard) as server:
        response = httpx.get(f"{server.url}/books", headers=bearer(token))
        assert response.status_code == 401 and response.json()["error"] == "invalid_token"
        assert httpx.get(f"{server.url}/books", headers=bearer(paired)).status_code == 200


# ---------------------------------------------------------------- costs an attacker controls


def _ec_keys(count: int, with_kid: bool) -> list[VerificationKey]:
    return [
        VerificationKey.from_public_key(
            ec.generate_private_key(ec.SECP256R1()).public_key(), kid=f"k{i}" if with_kid else None
        )
        for i in range(count)
    ]


def test_candidate_keys_bounded() -> None:
    """A token without kid (or an unknown one) against 100 keys is tried against at most a few."""
    keys = KeySet.of(_ec_keys(100, with_kid=True) + _ec_keys(10, with_kid=False))
    assert len(keys.candidates(None, "ES256")) == MAX_CANDIDATE_KEYS
    assert len(keys.candidates("unknown", "ES256")) == MAX_CANDIDATE_KEYS
    assert len(keys.candidates("k7", "ES256")) == MAX_CANDIDATE_KEYS
    assert keys.candidates(None, "RS256") == ()


def test_forged_kidless_token_costs_bounded_work_through_jwks(
    idp: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through a real JWKS of 60 keys, a forged token without kid causes at most MAX_CANDIDATE_KEYS checks."""
    with LocalIssuer(algorithms=("ES256",) * 60) as big:
        guard = big.guard(introspection=False)
        calls = 0
        from tokenguard import keys as keys_module

        original = keys_module._ec_verifier

        def counting(key: Any, alg: str, size: int) -> Any:
            verify = original(key, alg, size)

            def wrapped(signing_input: bytes, signature: bytes) -> bool:
                nonlocal calls
                calls += 1
                return verify(signing_input, signature)

            return wrapped

        monkeypatch.setattr(keys_module, "_ec_verifier", counting)
        good = big.issue(alg="ES256", kid=big.key("ES256").kid)
        assert guard.verify_sync(good).subject == "user-1"  # loads the 60 keys
        payload = big.issue(alg="ES256").split(".")[1]
        header = base64.urlsafe_b64encode(b'{"alg":"ES256","typ":"at+jwt"}').rstrip(b"=").decode()
        forged = f"{header}.{payload}." + base64.urlsafe_b64encode(b"\x01" * 64).rstrip(b"=").decode()
        calls = 0
        with pytest.raises(InvalidToken, match="signature"):
            guard.verify_sync(forged)
        assert 0 < calls <= MAX_CANDIDATE_KEYS


def _rsa_jwk(e: int, kid: str = "big-e") -> dict[str, Any]:
    # A 4096-bit modulus, so that a 3072-bit exponent is below it (as RSA requires).
    n = rsa.generate_private_key(public_exponent=65537, key_size=4096).public_key().public_numbers().n

    def b64(value: int) -> str:
        return base64.urlsafe_b64encode(value.to_bytes((value.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()

    return {"kty": "RSA", "kid": kid, "n": b64(n), "e": b64(e), "alg": "RS256"}


def test_unreasonable_rsa_keys_refused_at_jwks_load(caplog: pytest.LogCaptureFixture) -> None:
    """A JWKS key with a 3072-bit exponent is skipped at load, with a log line naming its kid."""
    huge_e = (1 << 3071) | 1
    with LocalIssuer(algorithms=("RS256",)) as server:
        good = server.jwks()["keys"][0]
        document = {"keys": [good, _rsa_jwk(huge_e, kid="evil\r\nkid")]}
        server.faults["/jwks"] = Fault(status=200, body=json.dumps(document).encode(), content_type="application/json")
        guard = server.guard(introspection=False)
        with caplog.at_level(logging.WARNING, logger="tokenguard.sources"):
            assert guard.verify_sync(server.issue()).subject == "user-1"
        lines = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
        assert len(lines) == 1
        assert "evil\\r\\nkid" in lines[0] and "exponent" in lines[0]
        assert "\r" not in lines[0]
    keys, skipped = parse_jwks({"keys": [_rsa_jwk(huge_e)]})
    assert len(keys) == 0 and "exponent" in skipped[0]


def test_oversized_rsa_modulus_refused() -> None:
    """An RSA key over MAX_RSA_BITS is refused with a clear error."""
    from tokenguard.keys import MAX_RSA_BITS

    # No need for primes: a public key is just (n, e).
    n = (1 << (MAX_RSA_BITS + 1023)) | 0xFFFF_FFFF_FFFF_FFFF
    big = rsa.RSAPublicNumbers(65537, n).public_key()
    with pytest.raises(ConfigurationError, match="exceeds"):
        VerificationKey.from_public_key(big)


def test_warned_paths_bounded_and_escaped(caplog: pytest.LogCaptureFixture) -> None:
    """20,000 long paths keep at most MAX_WARNED_PATHS entries and log lines; CR and ESC never reach the log."""
    policy = ResponsePolicy()
    headers = [("Cache-Control", "public, max-age=60")]
    with caplog.at_level(logging.WARNING, logger="tokenguard.response"):
        for i in range(20_000):
            policy.secure(headers, f"/p/{i}/" + "x" * 500)
    assert len(policy._warned) <= MAX_WARNED_PATHS
    assert sum(len(p) for p in policy._warned) <= MAX_WARNED_PATHS * 256
    assert len(caplog.records) == MAX_WARNED_PATHS
    assert "not logged" in caplog.records[-1].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tokenguard.response"):
        ResponsePolicy().secure(headers, "/evil\r\nFAKE LOG LINE\x1b[31m")
    last = caplog.records[-1].getMessage()
    assert "\r" not in last and "\n" not in last and "\x1b" not in last
    assert "\\r\\nFAKE LOG LINE\\x1b" in last
    assert all(len(r.getMessage()) < 400 for r in caplog.records)


def test_cache_warning_through_starlette_escapes_the_path(idp: LocalIssuer, caplog: pytest.LogCaptureFixture) -> None:
    """Through the real middleware, a public Cache-Control on a hostile path is logged escaped."""

    async def cached(request: Request) -> PlainTextResponse:
        return PlainTextResponse("x", headers={"Cache-Control": "public, max-age=60"})

    app = TokenGuardMiddleware(Starlette(routes=[Route("/c/{rest}", cached)]), idp.guard())
    token = idp.issue(alg="ES256", scope="read")
    with UvicornServer(app) as server, caplog.at_level(logging.WARNING, logger="tokenguard.response"):
        response = httpx.get(f"{server.url}/c/a%0D%0Ab%1B", headers=bearer(token))
        assert response.status_code == 200 and response.headers["cache-control"] == "private, max-age=60"
    messages = [r.getMessage() for r in caplog.records if "storable" in r.getMessage()]
    assert messages and "\\r\\nb\\x1b" in messages[0] and "\r" not in messages[0]


def test_form_over_limit_left_to_the_app(stack: Served, idp: LocalIssuer) -> None:
    """A form body over 64 KiB is not searched by any adapter; the app still gets all of it."""
    token = idp.issue(alg="ES256", scope="read")
    big = "x" * (70 * 1024)
    with stack(allow_form_token=True) as server:
        response = httpx.post(f"{server.url}/books", data={"title": big}, headers=bearer(token))
        assert response.status_code == 200
        assert response.json()["form"]["title"] == big
        hidden = httpx.post(f"{server.url}/books", data={"title": big, "access_token": token})
        assert hidden.status_code == 401  # no credentials found: a bare challenge
        assert parse_challenges(hidden.headers["www-authenticate"])[0].error is None


@given(st.one_of(st.text(max_size=8), st.integers(), st.booleans(), st.none(), st.floats()))
def test_parse_bool_answers_or_refuses(value: object) -> None:
    """Any value is a bool or a ConfigurationError naming the option; never a guess."""
    from tokenguard._config import parse_bool

    try:
        result = parse_bool(value, "TOKENGUARD_X")
    except ConfigurationError as exc:
        assert "TOKENGUARD_X" in str(exc)
    else:
        assert result is (str(value).strip().lower() in ("1", "true", "yes", "on"))


@pytest.mark.parametrize(
    ("typ", "other"),
    [
        ("at+jwt", False),
        ("application/at+jwt", False),
        ("AT+JWT", False),
        ("JWT", False),
        ("jwt", False),
        ("dpop+jwt", True),
        ("application/logout+jwt", True),
        ("secevent+jwt", True),
        ("JWE", True),
        ("JOSE+JSON", True),
        ("", False),
    ],
)
def test_names_other_kind_table(typ: str, other: bool) -> None:
    """Which typ values name a kind of JWT that is not an access token."""
    from tokenguard.jwt import names_other_kind

    assert names_other_kind(typ) is other


def test_jwks_skip_reasons_are_log_safe() -> None:
    """Reasons for skipped JWKS keys (logged) carry kid and kty escaped and cut, never raw CR/LF/ESC."""
    document = {"keys": [{"kty": "X\r\n" * 50, "kid": "a\x1b" * 100}, {"kty": "RSA\x1b", "n": 1, "kid": "k\n"}]}
    _, skipped = parse_jwks(document)
    assert len(skipped) == 2
    for reason in skipped:
        assert reason.isascii() and reason.isprintable()
        assert len(reason) < 600  # kid and kty cut to 64 and 16 characters before escaping


def test_signing_key_repr_hides_secrets(idp: LocalIssuer) -> None:
    """The test issuer's keys do not print their private half or HMAC secret."""
    with LocalIssuer(algorithms=("HS256",)) as hmac_issuer:
        key = hmac_issuer.key("HS256")
        assert key.public_jwk["k"] not in repr(key) and repr(key.private) not in repr(key)


def test_scope_sequences_refuse_bare_strings(idp: LocalIssuer) -> None:
    """Scopes and scope claims given as one string are refused, naming what is wrong."""
    from tokenguard import Introspection
    from tokenguard.scopes import ScopeRequirement

    with pytest.raises(ConfigurationError, match="scopes must be a sequence"):
        ScopeRequirement("read")  # type: ignore[arg-type]
    guard = idp.guard()
    with pytest.raises(ConfigurationError, match="scope names must be strings"):
        guard.requires(["read", "write"])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="scope_claims"):
        Introspection(endpoint=idp.introspection_endpoint, client_id="c", scope_claims="scope")  # type: ignore[arg-type]
