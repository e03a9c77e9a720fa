"""Django and Django REST framework through Django's test client and a real threaded server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from .django_support import configure_django

configure_django()

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.urls import path  # noqa: E402
from rest_framework.request import Request  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.views import APIView  # noqa: E402

from tokenguard import ConfigurationError, TokenGuard, parse_challenges  # noqa: E402
from tokenguard.django import PathRules, TokenGuardMiddleware, claims_of, get_guard, requires  # noqa: E402
from tokenguard.pytest_plugin import TokenFactory  # noqa: E402
from tokenguard.rest_framework import ScopePermission, scopes_required  # noqa: E402
from tokenguard.testing import Fault, LocalIssuer  # noqa: E402

from .conftest import WSGIServer  # noqa: E402

pytestmark = pytest.mark.integration
SCOPE = "library-api-checked-books"


# ---------------------------------------------------------------- the test project's views


@requires("read")
def read_view(request: HttpRequest) -> JsonResponse:
    claims = claims_of(request)
    assert claims is not None
    return JsonResponse({"sub": claims.subject})


@requires("read")
async def async_view(request: HttpRequest) -> JsonResponse:
    claims = claims_of(request)
    assert claims is not None
    return JsonResponse({"sub": claims.subject, "async": True})


@requires("a", "b", any_of=True)
def either_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


def open_view(request: HttpRequest) -> JsonResponse:
    claims = claims_of(request)
    user = getattr(request, "user", None)
    return JsonResponse({"sub": claims.subject if claims else None, "user": str(user) if user else None})


def cached_view(request: HttpRequest) -> JsonResponse:
    response = JsonResponse({"ok": True})
    response["Cache-Control"] = "public, max-age=60"
    response["Vary"] = "Accept-Encoding"
    return response


class DRFRead(APIView):
    required_scopes = ["read"]

    def get(self, request: Request) -> Response:
        return Response({"user": request.user.username, "scopes": sorted(request.auth.scopes)})


class DRFAnyOf(APIView):
    required_scopes_any_of = ["a", "b"]

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


class DRFFactory(APIView):
    permission_classes = [scopes_required("write")]

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


urlpatterns = [
    path("read", read_view),
    path("async", async_view),
    path("either", either_view),
    path("open", open_view),
    path("static/app.css", open_view),
    path("staticfiles-admin", open_view),
    path("cached", cached_view),
    path("drf/read", DRFRead.as_view()),
    path("drf/any", DRFAnyOf.as_view()),
    path("drf/write", DRFFactory.as_view()),
]

MIDDLEWARE = ["tokenguard.django.TokenGuardMiddleware"]


@pytest.fixture
def guard(tokenguard_guard: Callable[..., TokenGuard]) -> Iterator[TokenGuard]:
    """The project's guard: a real one, pointed at the plugin's loopback issuer."""
    made = tokenguard_guard()
    with override_settings(TOKENGUARD_GUARD=made, ROOT_URLCONF=__name__):
        yield made


def project(**overrides: Any) -> Any:
    """Settings for one test: this module's URLs, the middleware, and ``overrides``."""
    return override_settings(**{"MIDDLEWARE": MIDDLEWARE, "TOKENGUARD_PUBLIC_PATHS": [], **overrides})


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def challenge(response: Any) -> Any:
    return parse_challenges(response["WWW-Authenticate"])[0]


def assert_challenge_headers(response: Any) -> None:
    assert response["Cache-Control"] == "no-store" and response["Pragma"] == "no-cache"
    assert response["Content-Type"] == "application/json"


# ---------------------------------------------------------------- plain Django: middleware and decorator


@pytest.mark.parametrize("middleware", [MIDDLEWARE, []], ids=["middleware", "decorator-only"])
def test_django_answers_like_every_adapter(
    guard: TokenGuard, tokenguard_token: TokenFactory, middleware: list[str]
) -> None:
    """401 bare challenge, 400, 401 invalid_token, 403 with scope, 200 with Vary/no-store."""
    with project(MIDDLEWARE=middleware):
        client = Client()
        missing = client.get("/read")
        assert missing.status_code == 401 and challenge(missing).error is None
        assert missing.json() == {"error": "unauthorized", "error_description": "authentication required"}
        assert_challenge_headers(missing)
        malformed = client.get("/read", HTTP_AUTHORIZATION="Bearer a b")
        assert malformed.status_code == 400 and malformed.json()["error"] == "invalid_request"
        expired = client.get("/read", **bearer(tokenguard_token("read", expires_in=-600)))
        assert expired.status_code == 401 and challenge(expired).error == "invalid_token"
        assert_challenge_headers(expired)
        weak = client.get("/read", **bearer(tokenguard_token("other")))
        assert weak.status_code == 403 and challenge(weak).error == "insufficient_scope"
        assert challenge(weak).scope == ("read",)
        ok = client.get("/read", **bearer(tokenguard_token("read")))
        assert ok.status_code == 200 and ok.json() == {"sub": "user-1"}
        assert "Authorization" in ok["Vary"] and ok["Cache-Control"] == "no-store"
        assert client.get("/either", **bearer(tokenguard_token("b"))).status_code == 200
        assert client.get("/either", **bearer(tokenguard_token("c"))).status_code == 403


def test_async_view_decorator(guard: TokenGuard, tokenguard_token: TokenFactory) -> None:
    """``@requires`` on an ``async def`` view: same answers, through the sync and the async test client."""
    import asyncio

    from django.test import AsyncClient

    with project(MIDDLEWARE=[]):
        client = Client()
        assert client.get("/async").status_code == 401
        assert client.get("/async", **bearer(tokenguard_token("other"))).status_code == 403
        ok = client.get("/async", **bearer(tokenguard_token("read")))
        assert ok.json() == {"sub": "user-1", "async": True} and ok["Cache-Control"] == "no-store"
        token = tokenguard_token("read")
        answer = asyncio.run(AsyncClient().get("/async", headers={"Authorization": f"Bearer {token}"}))
        assert answer.status_code == 200 and "Authorization" in answer["Vary"]


def test_decorator_refuses_a_list_of_scopes() -> None:
    """``requires(["a", "b"])`` (a list where names were expected) is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="scope names"):
        requires(["a", "b"])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="invalid scope"):
        requires("a b")


def test_middleware_protects_everything_not_named_public(guard: TokenGuard, tokenguard_token: TokenFactory) -> None:
    """Undecorated views need a token; public paths and whole-segment prefixes do not; dot-segments never match."""
    with project(TOKENGUARD_PUBLIC_PATHS=["/open"], TOKENGUARD_PUBLIC_PREFIXES=["/static"]):
        client = Client()
        assert client.get("/open").json() == {"sub": None, "user": None}
        assert client.get("/static/app.css").status_code == 200
        assert client.get("/staticfiles-admin").status_code == 401
        assert client.get("/static/../staticfiles-admin").status_code == 401
        assert client.get("/cached").status_code == 401
        ok = client.get("/cached", **bearer(tokenguard_token("x", subject="alice")))
        assert ok.status_code == 200
        # RFC 9111 §3.5: an authorized response marked public would be shared; made private.
        assert ok["Cache-Control"] == "private, max-age=60"
        assert ok["Vary"] == "Accept-Encoding, Authorization"


def test_middleware_protect_false_verifies_when_sent(guard: TokenGuard, tokenguard_token: TokenFactory) -> None:
    """TOKENGUARD_PROTECT=False: no token passes through, a sent token is still verified, user is set."""
    with project(TOKENGUARD_PROTECT=False):
        client = Client()
        assert client.get("/cached").status_code == 200
        assert client.get("/cached", HTTP_AUTHORIZATION="Bearer bad.token.here").status_code == 401
        ok = client.get("/open", **bearer(tokenguard_token("x", subject="alice")))
        assert ok.json() == {"sub": "alice", "user": "alice"}


def test_upstream_down_is_503(
    guard: TokenGuard, tokenguard_token: TokenFactory, tokenguard_issuer: LocalIssuer
) -> None:
    """Introspection unreachable and nothing cached: 503 with Retry-After, never 401."""
    tokenguard_issuer.faults["/introspect"] = Fault(status=502)
    try:
        with project():
            response = Client().get("/read", **bearer(tokenguard_token.opaque("read")))
            drf = Client().get("/drf/read", **bearer(tokenguard_token.opaque("read")))
    finally:
        del tokenguard_issuer.faults["/introspect"]
    for answer in (response, drf):
        assert answer.status_code == 503 and int(answer["Retry-After"]) >= 1
        assert answer["Cache-Control"] == "no-store"


# ---------------------------------------------------------------- Django REST framework


def test_drf_authentication_and_permission(guard: TokenGuard, tokenguard_token: TokenFactory) -> None:
    """request.user / request.auth, RFC 6750 401/403 with the right challenge, opaque tokens too."""
    with project(MIDDLEWARE=[]):
        client = Client()
        missing = client.get("/drf/read")
        assert missing.status_code == 401 and challenge(missing).error is None
        assert missing.json()["error"] == "unauthorized"
        assert_challenge_headers(missing)
        bad = client.get("/drf/read", HTTP_AUTHORIZATION="Bearer bad.token.here")
        assert bad.status_code == 401 and challenge(bad).error == "invalid_token"
        assert bad.json()["error"] == "invalid_token"
        assert_challenge_headers(bad)
        weak = client.get("/drf/read", **bearer(tokenguard_token("other")))
        assert weak.status_code == 403 and challenge(weak).scope == ("read",)
        assert weak.json()["error"] == "insufficient_scope"
        ok = client.get("/drf/read", **bearer(tokenguard_token("read extra", subject="alice")))
        assert ok.status_code == 200 and ok.json() == {"user": "alice", "scopes": ["extra", "read"]}
        opaque = client.get("/drf/read", **bearer(tokenguard_token.opaque("read", subject="svc")))
        assert opaque.status_code == 200 and opaque.json()["user"] == "svc"
        assert client.get("/drf/any", **bearer(tokenguard_token("a"))).status_code == 200
        assert client.get("/drf/any", **bearer(tokenguard_token("c"))).status_code == 403
        assert client.get("/drf/write", **bearer(tokenguard_token("read"))).status_code == 403
        assert client.get("/drf/write", **bearer(tokenguard_token("write"))).status_code == 200


def test_drf_default_exception_handler_still_sends_the_challenge(
    guard: TokenGuard, tokenguard_token: TokenFactory
) -> None:
    """Without tokenguard's exception handler, status and WWW-Authenticate are still right."""
    from django.conf import settings

    rest = {**settings.REST_FRAMEWORK}
    del rest["EXCEPTION_HANDLER"]
    with project(MIDDLEWARE=[], REST_FRAMEWORK=rest):
        weak = Client().get("/drf/read", **bearer(tokenguard_token("other")))
        assert weak.status_code == 403 and challenge(weak).error == "insufficient_scope"
        bad = Client().get("/drf/read", HTTP_AUTHORIZATION="Bearer bad.token.here")
        assert bad.status_code == 401 and challenge(bad).error == "invalid_token"


def test_drf_with_middleware_gets_authenticated_headers(guard: TokenGuard, tokenguard_token: TokenFactory) -> None:
    """With the middleware, DRF responses get Vary: Authorization and no-store; the token is verified once."""
    with project():
        ok = Client().get("/drf/read", **bearer(tokenguard_token("read")))
        assert ok.status_code == 200
        assert "Authorization" in ok["Vary"] and ok["Cache-Control"] == "no-store"


def test_required_scopes_as_a_string_is_refused(guard: TokenGuard, tokenguard_token: TokenFactory) -> None:
    """``required_scopes = "read"`` (a missing list) is a configuration error, not a per-letter check."""

    class View:
        required_scopes = "read"

    with pytest.raises(ConfigurationError, match="View.required_scopes"):
        ScopePermission().requirement(View())


# ---------------------------------------------------------------- configuration


def test_public_path_options_refuse_bare_strings() -> None:
    """A bare string where a list of paths is expected names the setting."""
    with pytest.raises(ConfigurationError, match="TOKENGUARD_PUBLIC_PATHS"):
        PathRules("/health")
    with pytest.raises(ConfigurationError, match="TOKENGUARD_PUBLIC_PREFIXES"):
        PathRules((), "/static")
    with pytest.raises(ConfigurationError, match="starting with '/'"):
        PathRules(["health"])
    with override_settings(TOKENGUARD_PUBLIC_PATHS="/health", TOKENGUARD_GUARD=None):
        with pytest.raises(ConfigurationError, match="TOKENGUARD_PUBLIC_PATHS"):
            TokenGuardMiddleware(lambda request: JsonResponse({}))
    with override_settings(TOKENGUARD_PROTECT="false"):
        with pytest.raises(ConfigurationError, match="TOKENGUARD_PROTECT"):
            TokenGuardMiddleware(lambda request: JsonResponse({}))


@given(
    prefix=st.from_regex(r"/[a-z]{1,8}", fullmatch=True),
    rest=st.lists(st.sampled_from(["a", "b", ".", "..", "", "x.y"]), max_size=5),
    glued=st.from_regex(r"[a-z-]{1,8}", fullmatch=True),
)
def test_prefix_matches_whole_segments_only(prefix: str, rest: list[str], glued: str) -> None:
    """Property: a prefix covers itself and paths below it, never a longer sibling, never dot-segments."""
    rules = PathRules((), [prefix])
    below = prefix + "/" + "/".join(rest)
    has_dots = any(part in (".", "..") for part in rest)
    assert rules.is_public(below) is (not has_dots)
    assert rules.is_public(prefix)
    assert not rules.is_public(prefix + glued)


def test_guard_settings_errors_name_the_option() -> None:
    """Missing or wrong guard settings raise ConfigurationError naming the setting."""
    cases: list[tuple[dict[str, Any], str]] = [
        ({"TOKENGUARD_GUARD": None, "TOKENGUARD": None}, "TOKENGUARD_GUARD or the TOKENGUARD dict"),
        ({"TOKENGUARD_GUARD": None, "TOKENGUARD": {"AUDIENCE": "x"}}, r'TOKENGUARD\["ISSUER"\]'),
        ({"TOKENGUARD_GUARD": None, "TOKENGUARD": {"ISSUER": "https://i.test"}}, r'TOKENGUARD\["AUDIENCE"\]'),
        ({"TOKENGUARD_GUARD": "no.such.module.guard"}, "TOKENGUARD_GUARD: cannot import"),
        ({"TOKENGUARD_GUARD": 42}, "TOKENGUARD_GUARD must name a TokenGuard"),
    ]
    for overrides, message in cases:
        with override_settings(**overrides), pytest.raises(ConfigurationError, match=message):
            get_guard()


def test_guard_built_from_the_tokenguard_dict(tokenguard_issuer: LocalIssuer, tokenguard_token: TokenFactory) -> None:
    """The TOKENGUARD dict builds a working guard by discovery."""
    options = {"ISSUER": tokenguard_issuer.issuer, "AUDIENCE": tokenguard_token.audience, "REALM": "books"}
    with override_settings(TOKENGUARD_GUARD=None, TOKENGUARD=options, ROOT_URLCONF=__name__), project():
        guard = get_guard()
        try:
            assert guard.realm == "books"
            response = Client().get("/read", **bearer(tokenguard_token("read")))
            assert response.status_code == 200
        finally:
            guard.close()


# ---------------------------------------------------------------- a real server


def test_real_server_run(guard: TokenGuard, tokenguard_token: TokenFactory) -> None:
    """Django's WSGI application under a real threaded HTTP server answers the same way."""
    with project(), WSGIServer(get_wsgi_application()) as server:
        assert httpx.get(f"{server.url}/read").status_code == 401
        ok = httpx.get(f"{server.url}/read", headers={"Authorization": f"Bearer {tokenguard_token('read')}"})
        assert ok.status_code == 200 and ok.json() == {"sub": "user-1"}
        weak = httpx.get(f"{server.url}/drf/read", headers={"Authorization": f"Bearer {tokenguard_token('x')}"})
        assert weak.status_code == 403 and 'scope="read"' in weak.headers["www-authenticate"]
        two = httpx.get(f"{server.url}/read", headers=[("Authorization", "Bearer a"), ("Authorization", "Bearer b")])
        assert two.status_code == 400


def test_middleware_serves_the_protected_resource_metadata(
    tokenguard_guard: Callable[..., TokenGuard], tokenguard_token: TokenFactory
) -> None:
    """RFC 9728: with resource= set, the document the challenges point at is served, public, as elsewhere."""
    made = tokenguard_guard(resource="https://api.example.com/books")
    with override_settings(TOKENGUARD_GUARD=made, ROOT_URLCONF=__name__), project():
        client = Client()
        refused = client.get("/cached")
        assert refused.status_code == 401
        pointer = dict(challenge(refused).extra)["resource_metadata"]
        assert pointer == "https://api.example.com/.well-known/oauth-protected-resource/books"
        document = client.get("/.well-known/oauth-protected-resource/books")
        assert document.status_code == 200
        assert document.json()["resource"] == "https://api.example.com/books"
        assert client.post("/.well-known/oauth-protected-resource/books").status_code == 401


def test_cors_preflight_with_django_cors_headers(guard: TokenGuard, tokenguard_token: TokenFactory) -> None:
    """django-cors-headers above the middleware (as its docs ask) answers preflights; below it, the preflight
    needs TOKENGUARD_CORS_PREFLIGHT; either way a request without a token is 401 with the CORS headers."""
    origin = "https://spa.example"
    preflight = {"HTTP_ORIGIN": origin, "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "GET"}
    cors = {"CORS_ALLOWED_ORIGINS": [origin], "CORS_EXPOSE_HEADERS": ["WWW-Authenticate"]}
    above = ["corsheaders.middleware.CorsMiddleware", *MIDDLEWARE]
    below = [*MIDDLEWARE, "corsheaders.middleware.CorsMiddleware"]
    with project(MIDDLEWARE=above, **cors):
        answered = Client().options("/open", **preflight)
        assert answered.status_code == 200 and answered["Access-Control-Allow-Origin"] == origin
        refused = Client().get("/open", HTTP_ORIGIN=origin)
        assert refused.status_code == 401
        assert refused["Access-Control-Allow-Origin"] == origin
        assert "www-authenticate" in refused["Access-Control-Expose-Headers"].lower()
    with project(MIDDLEWARE=below, **cors):
        assert Client().options("/open", **preflight).status_code == 401
    with project(MIDDLEWARE=below, TOKENGUARD_CORS_PREFLIGHT=True, **cors):
        answered = Client().options("/open", **preflight)
        assert answered.status_code == 200 and answered["Access-Control-Allow-Origin"] == origin
        assert Client().options("/open").status_code == 401  # only preflights pass
    with project(TOKENGUARD_CORS_PREFLIGHT="yes"):
        with pytest.raises(ConfigurationError, match="TOKENGUARD_CORS_PREFLIGHT must be True or False"):
            TokenGuardMiddleware(lambda request: JsonResponse({}))
