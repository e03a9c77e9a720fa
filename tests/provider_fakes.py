"""Loopback fakes of the four providers, built from each provider's public documentation.

Each fake serves real HTTP on ``127.0.0.1`` with the provider's documented
routes, request bodies, status codes and headers:

* :class:`LibertyFake`: IBM WebSphere Liberty's OpenID Connect provider,
  ``/oidc/endpoint/<provider>/{authorize,token,introspect,revoke,jwk}``; the
  token endpoint takes the authorization-code grant (with PKCE), the refresh
  grant and client credentials, with HTTP Basic client authentication, and
  answers with ``Cache-Control: no-store`` and ``Pragma: no-cache``
  (RFC 6749 §5.1); access tokens are opaque by default.
* :class:`LogtoFake`: Logto (node ``oidc-provider``), ``/oidc/{token,jwks,
  token/introspection}``; JWT access tokens (``typ: at+jwt``) for an API
  resource, opaque ones otherwise, whose introspection answer carries
  ``active`` and ``sub`` only.
* :class:`GrantIDFake`: GrantID / IdentityServer, ``/connect/{token,
  introspect}``, the introspection credentials in the request body; JWTs with
  ``aud`` = the authority (GrantID's example) and ``scope`` as an array;
  64-hex reference tokens.
* :class:`DianFake`: the DIAN identity service, ``/identidad/sts/v1/tokens/
  {login,refresh,revoke}``; credentials in the login query string, encrypted
  fields, a ``DToken`` answer with an HS256 ``idToken``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlsplit

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec

from tokenguard.client import decrypt_field

Reply = tuple[int, dict[str, str], bytes]

#: RFC 6749 §5.1: every answer carrying tokens (or token errors).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def json_reply(status: int, document: Any, headers: Mapping[str, str] | None = None) -> Reply:
    return status, {"Content-Type": "application/json;charset=UTF-8", **(headers or {})}, json.dumps(document).encode()


class Recorded:
    """One request as the fake received it."""

    def __init__(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body

    @property
    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode(), keep_blank_values=True))


class FakeServer:
    """A threaded loopback HTTP server dispatching to ``handle``; records every request."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                url = urlsplit(self.path)
                recorded = Recorded(
                    self.command,
                    url.path,
                    dict(parse_qsl(url.query, keep_blank_values=True)),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                server.requests.append(recorded)
                status, headers, payload = server.handle(recorded)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve  # noqa: N815

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def handle(self, request: Recorded) -> Reply:
        raise NotImplementedError

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def __enter__(self) -> Any:
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def rfc6749_basic(header: str | None) -> tuple[str, str] | None:
    """Decode ``Authorization: Basic`` as RFC 6749 §2.3.1 says: base64, then form-urldecode each part."""
    if not header or not header.startswith("Basic "):
        return None
    try:
        raw = base64.b64decode(header[6:], validate=True).decode()
    except ValueError:
        return None
    client_id, colon, secret = raw.partition(":")
    return (unquote_plus(client_id), unquote_plus(secret)) if colon else None


def plain_basic(header: str | None) -> tuple[str, str] | None:
    """Decode ``Authorization: Basic`` as RFC 7617 alone: base64 of ``id:secret``, no form-decoding."""
    if not header or not header.startswith("Basic "):
        return None
    try:
        raw = base64.b64decode(header[6:], validate=True).decode()
    except ValueError:
        return None
    client_id, colon, secret = raw.partition(":")
    return (client_id, secret) if colon else None


def oauth_error(status: int, error: str, description: str, *, basic_realm: str | None = None) -> Reply:
    """An RFC 6749 §5.2 error answer (401 with a Basic challenge for a failed Basic authentication)."""
    headers = dict(NO_STORE)
    if basic_realm is not None:
        headers["WWW-Authenticate"] = f'Basic realm="{basic_realm}"'
    return json_reply(status, {"error": error, "error_description": description}, headers)


# ---------------------------------------------------------------- IBM Liberty


class LibertyFake(FakeServer):
    """IBM Liberty's OpenID Connect provider ``<openidConnectProvider id="OP">``.

    Liberty's token endpoint documentation: ``POST
    https://host/oidc/endpoint/<provider>/token`` with
    ``Content-Type: application/x-www-form-urlencoded``, ``grant_type``,
    ``code``, ``redirect_uri`` (and ``code_verifier`` under PKCE), the client
    authenticated with HTTP Basic; the answer is HTTP 200 with a JSON object
    holding ``access_token``, ``token_type: Bearer``, ``expires_in``,
    ``scope``, ``refresh_token`` and ``id_token``.
    """

    def __init__(self, *, provider: str = "OP", client_id: str = "rp-client", client_secret: str = "rp-secret") -> None:
        super().__init__()
        self.provider = provider
        self.client_id = client_id
        self.client_secret = client_secret
        self.base = f"/oidc/endpoint/{provider}"
        self.issuer = self.origin + self.base
        self.token_endpoint = self.issuer + "/token"
        self.expires_in = 7199  # Liberty's default accessTokenLifetime is 7200 s
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.codes: dict[str, dict[str, str]] = {}
        self.access: dict[str, dict[str, Any]] = {}
        self.refresh: dict[str, dict[str, Any]] = {}
        self.send_pragma = True

    def authorize(
        self, *, redirect_uri: str, scope: str, code_challenge: str | None = None, user: str = "alice"
    ) -> str:
        """What the browser part of the flow ends with: a one-time code for ``redirect_uri``."""
        code = secrets.token_urlsafe(20)
        self.codes[code] = {
            "redirect_uri": redirect_uri,
            "scope": scope,
            "sub": user,
            "challenge": code_challenge or "",
        }
        return code

    def _tokens(self, sub: str, scope: str) -> dict[str, Any]:
        access = secrets.token_urlsafe(22)[:30]  # Liberty's opaque access tokens are short random strings
        refresh = secrets.token_urlsafe(40)
        now = int(time.time())
        grant = {"sub": sub, "scope": scope, "exp": now + self.expires_in, "iat": now, "active": True}
        self.access[access] = grant
        self.refresh[refresh] = grant
        id_token = pyjwt.encode(
            {"iss": self.issuer, "sub": sub, "aud": self.client_id, "iat": now, "exp": now + 7200},
            self.key,
            algorithm="ES256",
        )
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": scope,
            "refresh_token": refresh,
            "id_token": id_token,
        }

    def _authenticated(self, request: Recorded) -> bool:
        credentials = rfc6749_basic(request.headers.get("authorization"))
        if credentials is None:
            form = request.form
            credentials = (form.get("client_id", ""), form.get("client_secret", ""))
        return hmac.compare_digest(credentials[0], self.client_id) and hmac.compare_digest(
            credentials[1], self.client_secret
        )

    def handle(self, request: Recorded) -> Reply:
        if not request.path.startswith(self.base):
            return 404, {}, b""
        route = request.path[len(self.base) :]
        if route == "/.well-known/openid-configuration":
            return json_reply(
                200,
                {
                    "issuer": self.issuer,
                    "authorization_endpoint": self.issuer + "/authorize",
                    "token_endpoint": self.token_endpoint,
                    "introspection_endpoint": self.issuer + "/introspect",
                    "revocation_endpoint": self.issuer + "/revoke",
                    "jwks_uri": self.issuer + "/jwk",
                    "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                    "code_challenge_methods_supported": ["plain", "S256"],
                },
            )
        if route == "/jwk":
            jwk = json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
            return json_reply(200, {"keys": [{**jwk, "kid": "liberty", "use": "sig", "alg": "ES256"}]})
        if request.method != "POST":
            return 405, {"Allow": "POST"}, b""
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return oauth_error(400, "invalid_request", "the request must be form-urlencoded")
        if not self._authenticated(request):
            return oauth_error(401, "invalid_client", "client authentication failed", basic_realm=self.provider)
        form = request.form
        if route == "/token":
            return self._token(form)
        if route == "/introspect":
            grant = self.access.get(form.get("token", ""))
            if grant is None or grant["exp"] < time.time():
                return json_reply(200, {"active": False}, NO_STORE)
            return json_reply(
                200,
                {**grant, "client_id": self.client_id, "token_type": "Bearer", "iss": self.issuer},
                NO_STORE,
            )
        if route == "/revoke":
            token = form.get("token", "")
            self.access.pop(token, None)
            self.refresh.pop(token, None)
            return 200, {}, b""
        return 404, {}, b""

    def _token(self, form: dict[str, str]) -> Reply:
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            stored = self.codes.pop(form.get("code", ""), None)  # codes are one-time (RFC 6749 §4.1.2)
            if stored is None:
                return oauth_error(400, "invalid_grant", "the authorization code is invalid or was used")
            if form.get("redirect_uri") != stored["redirect_uri"]:
                return oauth_error(400, "invalid_grant", "redirect_uri does not match")
            if stored["challenge"]:
                verifier = form.get("code_verifier", "")
                digest = hashlib.sha256(verifier.encode()).digest()
                expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
                if not verifier or not hmac.compare_digest(expected, stored["challenge"]):
                    return oauth_error(400, "invalid_grant", "PKCE verification failed")
            answer = self._tokens(stored["sub"], stored["scope"])
        elif grant_type == "refresh_token":
            grant = self.refresh.pop(form.get("refresh_token", ""), None)
            if grant is None:
                return oauth_error(400, "invalid_grant", "the refresh token is invalid")
            answer = self._tokens(grant["sub"], grant["scope"])
        elif grant_type == "client_credentials":
            answer = self._tokens(self.client_id, form.get("scope", ""))
            del answer["refresh_token"], answer["id_token"]
        else:
            return oauth_error(400, "unsupported_grant_type", f"{grant_type} is not supported")
        headers = dict(NO_STORE) if self.send_pragma else {"Cache-Control": "no-store"}
        return json_reply(200, answer, headers)


# ---------------------------------------------------------------- Logto


class LogtoFake(FakeServer):
    """A Logto tenant: issuer ``{origin}/oidc``; ``/oidc/token``, ``/oidc/jwks``, ``/oidc/token/introspection``.

    Logto's documented behaviour: a machine-to-machine app gets a JWT access
    token (``typ: at+jwt``, ``aud`` = the API resource, ``scope`` the granted
    permissions) when it asks for an API ``resource``, and an opaque token
    otherwise; introspection (client authentication by HTTP Basic, decoded as
    RFC 6749 §2.3.1 says, or in the body) answers ``{"active": true, "sub":
    ...}`` for an opaque token, with no ``scope``.
    """

    def __init__(self, *, client_id: str = "m2m-app", client_secret: str = "m2m+se/cr:et%25") -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.issuer = self.origin + "/oidc"
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.resources = {"https://api.example.com": {"read:books", "write:books"}}
        self.opaque: dict[str, dict[str, Any]] = {}

    def handle(self, request: Recorded) -> Reply:
        if request.path == "/oidc/.well-known/openid-configuration":
            return json_reply(
                200,
                {
                    "issuer": self.issuer,
                    "token_endpoint": self.issuer + "/token",
                    "jwks_uri": self.issuer + "/jwks",
                    "introspection_endpoint": self.issuer + "/token/introspection",
                    "revocation_endpoint": self.issuer + "/token/revocation",
                },
            )
        if request.path == "/oidc/jwks":
            jwk = json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
            return json_reply(200, {"keys": [{**jwk, "kid": "logto", "use": "sig", "alg": "ES256"}]})
        if request.method != "POST":
            return 404, {}, b""
        credentials = rfc6749_basic(request.headers.get("authorization"))
        form = request.form
        if credentials is None:
            credentials = (form.get("client_id", ""), form.get("client_secret", ""))
        if credentials != (self.client_id, self.client_secret):
            return oauth_error(401, "invalid_client", "client authentication failed")
        if request.path == "/oidc/token":
            return self._token(form)
        if request.path == "/oidc/token/introspection":
            grant = self.opaque.get(form.get("token", ""))
            if grant is None or grant["exp"] < time.time():
                return json_reply(200, {"active": False}, NO_STORE)
            return json_reply(200, {"active": True, "sub": grant["sub"]}, NO_STORE)
        return 404, {}, b""

    def _token(self, form: dict[str, str]) -> Reply:
        if form.get("grant_type") != "client_credentials":
            return oauth_error(400, "unsupported_grant_type", "only client_credentials here")
        now = int(time.time())
        resource = form.get("resource")
        requested = set(form.get("scope", "").split())
        if resource is None:
            token = secrets.token_urlsafe(32)
            self.opaque[token] = {"sub": self.client_id, "exp": now + 3600}
            return json_reply(200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600}, NO_STORE)
        if resource not in self.resources:
            return oauth_error(400, "invalid_target", "resource indicator is missing, or unknown")
        granted = " ".join(sorted(requested & self.resources[resource]))
        claims = {
            "jti": secrets.token_hex(8),
            "sub": self.client_id,
            "iat": now,
            "exp": now + 3600,
            "scope": granted,
            "client_id": self.client_id,
            "iss": self.issuer,
            "aud": resource,
        }
        token = pyjwt.encode(claims, self.key, algorithm="ES256", headers={"typ": "at+jwt", "kid": "logto"})
        answer = {"access_token": token, "token_type": "Bearer", "expires_in": 3600, "scope": granted}
        return json_reply(200, answer, NO_STORE)


# ---------------------------------------------------------------- GrantID / IdentityServer


class GrantIDFake(FakeServer):
    """A GrantID (IdentityServer) authority: ``/connect/token``, ``/connect/introspect``, discovery and JWKS.

    GrantID's documentation sends the API's ``client_id``/``client_secret``
    in the introspection request body (not HTTP Basic; this fake refuses
    Basic with 401 as a body-only configuration does), and its example JWT
    carries ``aud`` = the authority, ``scope`` as a JSON array. Reference
    tokens are 64 hex characters.
    """

    def __init__(self, *, api_name: str = "library-api", api_secret: str = "library-api-secret") -> None:
        super().__init__()
        self.api_name = api_name
        self.api_secret = api_secret
        self.authority = self.origin
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.reference: dict[str, dict[str, Any]] = {}

    def jwt(self, *, aud: Any = None, scope: list[str] | None = None, sub: str = "alice") -> str:
        now = int(time.time())
        claims = {
            "iss": self.authority,
            "nbf": now,
            "iat": now,
            "exp": now + 3600,
            "aud": self.authority if aud is None else aud,
            "scope": scope if scope is not None else ["openid", "library-api-checked-books"],
            "amr": ["pwd"],
            "client_id": "library-web",
            "sub": sub,
            "auth_time": now,
            "idp": "local",
        }
        return pyjwt.encode(claims, self.key, algorithm="ES256", headers={"typ": "at+jwt", "kid": "grantid"})

    def reference_token(self, *, scope: str = "openid library-api-checked-books", sub: str = "alice") -> str:
        token = secrets.token_hex(32).upper()
        now = int(time.time())
        self.reference[token] = {"sub": sub, "scope": scope, "exp": now + 3600, "iat": now, "nbf": now}
        return token

    def handle(self, request: Recorded) -> Reply:
        if request.path == "/.well-known/openid-configuration":
            return json_reply(
                200,
                {
                    "issuer": self.authority,
                    "jwks_uri": self.authority + "/.well-known/openid-configuration/jwks",
                    "token_endpoint": self.authority + "/connect/token",
                    "introspection_endpoint": self.authority + "/connect/introspect",
                    "userinfo_endpoint": self.authority + "/connect/userinfo",
                },
            )
        if request.path == "/.well-known/openid-configuration/jwks":
            jwk = json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
            return json_reply(200, {"keys": [{**jwk, "kid": "grantid", "use": "sig", "alg": "ES256"}]})
        if request.path == "/connect/introspect" and request.method == "POST":
            form = request.form
            if "authorization" in request.headers or (form.get("client_id"), form.get("client_secret")) != (
                self.api_name,
                self.api_secret,
            ):
                return 401, {}, b""  # IdentityServer answers a failed API authentication with a bare 401
            token = form.get("token", "")
            grant = self.reference.get(token)
            if grant is None:
                return json_reply(200, {"active": False})
            return json_reply(
                200,
                {
                    "iss": self.authority,
                    "nbf": grant["nbf"],
                    "iat": grant["iat"],
                    "exp": grant["exp"],
                    "aud": [self.authority + "/resources", self.api_name],
                    "client_id": "library-web",
                    "sub": grant["sub"],
                    "amr": "pwd",
                    "active": True,
                    "scope": grant["scope"],
                },
            )
        return 404, {}, b""


# ---------------------------------------------------------------- DIAN

DIAN_KEY = "0123456789abcdef"


class DianFake(FakeServer):
    """DIAN's identity service: ``POST /identidad/sts/v1/tokens/{login,refresh,revoke}``.

    Login: an empty body, ``Content-Type: application/json``, the grant and
    credentials in the query string, ``client_secret`` and ``password``
    encrypted (unless ``encrypted`` is off, as in DIAN's test environment)
    and stamped within 3 minutes. Refresh and revoke: ``Authorization:
    Bearer`` and ``ClientId`` headers. 200 with a camelCase ``DToken`` (or
    ``{"message": "success"}``), 400 with an error object, 401 for bad
    credentials or tokens, 429/503 with ``Retry-After``.
    """

    def __init__(self, *, expire_in: int = 3600, grant_parameter: str = "grant_type", id_secret: bytes = b"") -> None:
        super().__init__()
        self.url = self.origin
        self.expire_in = expire_in
        self.grant_parameter = grant_parameter
        self.id_secret = id_secret or b"dian-issued-16by"  # DIAN issues the idToken's HS256 secret
        self.calls: list[str] = []
        self.fail_next: list[tuple[int, dict[str, str], bytes]] = []
        self.tokens: dict[str, str] = {}
        self.id_tokens: dict[str, str] = {}
        self.refresh: dict[str, str] = {}
        self.revoked: set[str] = set()
        self.encrypted = True
        self.clock: Callable[[], float] = time.time
        self.login_queries: list[dict[str, str]] = []

    def _field(self, value: str) -> str:
        if not self.encrypted:
            return value
        plain, stamp = decrypt_field(value, DIAN_KEY)
        if abs(self.clock() - stamp.timestamp()) > 180:
            raise ValueError("timestamp outside the 3-minute window")
        return plain

    def id_token(self, client_id: str, **overrides: Any) -> str:
        payload = {
            "iss": "https://muisca.dian.gov.co",
            "aud": [client_id],
            "sub": "13|900123456|1234567890",
            "exp": int(self.clock()) + self.expire_in,
            "iat": int(self.clock()),
            "url": "https://muisca.dian.gov.co/WebIdentidad/",
            **overrides,
        }
        # DIAN's JSON escapes slashes ("\/"): build the payload bytes that way.
        raw = json.dumps(payload, separators=(",", ":")).replace("/", "\\/").encode()
        header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
        body = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        signing_input = f"{header}.{body}"
        mac = hmac.digest(self.id_secret, signing_input.encode(), "sha256")
        return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"

    def _issue(self, client_id: str) -> dict[str, Any]:
        n = len(self.tokens)
        access, refresh, id_token = f"at-{n}", f"rt-{n}", self.id_token(client_id, jti=str(n))
        self.tokens[access] = client_id
        self.id_tokens[id_token] = client_id
        self.refresh[refresh] = client_id
        return {
            "accessToken": access,
            "idToken": id_token,
            "refreshToken": refresh,
            "tokenType": "Bearer",
            "expireIn": self.expire_in,
            "clientId": f"  {client_id}  ",
        }

    def handle(self, request: Recorded) -> Reply:
        if request.method != "POST" or not request.path.startswith("/identidad/sts/v1/tokens/"):
            return json_reply(404, {"error": "not_found"})
        if request.body != b"" or request.headers.get("content-type") != "application/json":
            return json_reply(
                400, {"error": "invalid_request", "message": "empty body, Content-Type: application/json"}
            )
        name = request.path.rsplit("/", 1)[-1]
        self.calls.append(name)
        if self.fail_next:
            status, headers, body = self.fail_next.pop(0)
            if status in (429, 503):
                headers = {"Retry-After": "0", **headers}
            return status, {"Content-Type": "application/json", **headers}, body
        query = request.query
        if name == "login":
            self.login_queries.append(query)
            try:
                ok = self._field(query["client_secret"]) == "client-secret" and self._field(query["password"]) == "pw"
            except (KeyError, ValueError):
                return json_reply(400, {"error": "invalid_request", "message": "bad encryption"})
            if query.get(self.grant_parameter) != "password":
                return json_reply(400, {"error": "invalid_request", "message": f"{self.grant_parameter} is required"})
            if not ok or query.get("nit") != "900123456":
                return json_reply(401, {"error": "invalid_credentials"})
            return json_reply(200, self._issue(query["client_id"]))
        authorization = request.headers.get("authorization", "")
        bearer = authorization[7:] if authorization.startswith("Bearer ") else ""
        client_id = request.headers.get("clientid")
        if name == "refresh":
            owner = self.refresh.pop(bearer, None)
            if owner is None or client_id != owner:
                return json_reply(401, {"error": "invalid_token"})
            return json_reply(200, self._issue(owner))
        if name == "revoke":
            owner = self.tokens.get(bearer) or self.id_tokens.get(bearer)
            if owner is None or client_id != owner:
                return json_reply(401, {"error": "invalid_token"})
            self.revoked.add(bearer)
            return json_reply(200, {"message": "success"})
        return json_reply(404, {"error": "not_found"})
