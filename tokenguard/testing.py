"""A real OAuth 2.0 / OIDC issuer on a loopback socket, for tests and demos.

``LocalIssuer`` serves discovery (OIDC and RFC 8414), a JWK Set, RFC 7662
introspection (``client_secret_basic`` and ``client_secret_post``) and a
client-credentials token endpoint, and mints RS256/PS256/ES256/EdDSA/HS256
tokens. It counts requests per endpoint and can be made slow or broken, so
test suites can check caching, single-flight and outage behaviour::

    with LocalIssuer() as issuer:
        guard = issuer.guard(audience="https://api.test")
        token = issuer.issue(scope="read", audience="https://api.test")
        claims = guard.verify_sync(token)

It is test tooling: keys are generated per instance, secrets are fixed
strings, and it listens on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import selectors
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlsplit

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from .guard import TokenGuard
from .sources import FetchSettings

__all__ = ["Fault", "LocalIssuer", "SigningKey"]

_ALG_KEY = {
    "RS256": "RSA", "RS384": "RSA", "RS512": "RSA",
    "PS256": "RSA", "PS384": "RSA", "PS512": "RSA",
    "ES256": "P-256", "ES384": "P-384", "ES512": "P-521",
    "EdDSA": "Ed25519",
    "HS256": "oct", "HS384": "oct", "HS512": "oct",
}  # fmt: skip
_CURVES: dict[str, ec.EllipticCurve] = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}


@dataclass
class SigningKey:
    """A key the issuer signs with; ``public_jwk`` is what the JWKS publishes."""

    kid: str
    alg: str
    private: Any = field(repr=False)  # an HMAC secret or private key: never in a repr
    public_jwk: dict[str, Any] = field(repr=False)  # holds "k" for HMAC keys
    published: bool = True


def _make_key(alg: str, kid: str) -> SigningKey:
    kind = _ALG_KEY[alg]
    if kind == "oct":
        secret = secrets.token_bytes(64)
        jwk = {"kty": "oct", "kid": kid, "alg": alg, "k": base64.urlsafe_b64encode(secret).rstrip(b"=").decode()}
        return SigningKey(kid, alg, secret, jwk, published=False)
    private: Any
    if kind == "RSA":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif kind == "Ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        private = ec.generate_private_key(_CURVES[kind])
    algorithm = pyjwt.get_algorithm_by_name(alg)
    jwk = json.loads(algorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    return SigningKey(kid, alg, private, jwk)


@dataclass
class Fault:
    """How an endpoint misbehaves: a status, a raw body, a delay, or a dropped connection."""

    status: int = 503
    body: bytes = b'{"error":"temporarily_unavailable"}'
    content_type: str = "application/json"
    delay: float = 0.0
    drop: bool = False


class _StoppableServer(ThreadingHTTPServer):
    """A threading HTTP server whose :meth:`stop_serving` returns at once.

    ``socketserver``'s ``shutdown()`` only takes effect when ``serve_forever``
    next wakes from its ``select`` poll (0.5 s by default), so every stop used
    to cost up to half a second. Here the loop also watches one end of a socket
    pair, and stopping writes a byte to the other end: the loop wakes at once.
    """

    daemon_threads = True
    #: The listen backlog. socketserver's default of 5 drops connections that
    #: arrive in a burst (fifty concurrent cold requests), and a dropped SYN is
    #: retried after a second: a connect timeout in a loaded test, not a fault
    #: the test asked for.
    request_queue_size = 128
    #: Bounds handle_request()'s own wait, should a waiting connection vanish
    #: before it is accepted: the loop then gets back to watching for a stop.
    timeout = 1.0

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._stopping = threading.Event()
        self._stopped = threading.Event()

    def serve_until_stopped(self) -> None:
        """Accept and dispatch connections until :meth:`stop_serving` is called."""
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self, selectors.EVENT_READ)
                selector.register(self._wake_reader, selectors.EVENT_READ)
                while not self._stopping.is_set():
                    for key, _ in selector.select():
                        if key.fileobj is self and not self._stopping.is_set():
                            # A connection is waiting, so this accepts it without blocking.
                            self.handle_request()
                    self.service_actions()
        finally:
            self._stopped.set()

    def stop_serving(self) -> None:
        """Make :meth:`serve_until_stopped` return, and wait until it has."""
        self._stopping.set()
        self._wake_writer.send(b"\0")
        self._stopped.wait()

    def server_close(self) -> None:
        super().server_close()
        self._wake_reader.close()
        self._wake_writer.close()


@dataclass
class _Opaque:
    claims: dict[str, Any]
    revoked: bool = False


class LocalIssuer:
    """An authorization server on ``127.0.0.1`` serving real HTTP.

    Args:
        path: issuer path, e.g. ``"/oidc"`` (issuers with a path are common:
            Logto, IBM Liberty, Keycloak realms).
        algorithms: the signing algorithms to create keys for; the first signs
            by default.
        client_id / client_secret: credentials accepted at introspection and
            the token endpoint. The default secret contains characters that
            RFC 6749 §2.3.1 form-encoding changes, to catch clients that skip it.
        jwks_max_age: ``Cache-Control: max-age`` sent with the JWKS (``None``: none).
        metadata_style: ``"oidc"`` serves ``/.well-known/openid-configuration``
            appended to the issuer; ``"oauth"`` serves only the RFC 8414 form.
        endpoints: paths (under the issuer) of ``jwks``, ``introspection``
            and ``token``, to reproduce a provider's layout, e.g. Logto's
            ``{"introspection": "/token/introspection"}``.
    """

    def __init__(
        self,
        *,
        path: str = "",
        algorithms: Iterable[str] = ("RS256", "ES256", "PS256", "EdDSA", "HS256"),
        client_id: str = "resource-server",
        client_secret: str = "s3cr3t: with+special/chars%",  # noqa: S107 - test credential
        jwks_max_age: int | None = 300,
        metadata_style: str = "oidc",
        endpoints: Mapping[str, str] | None = None,
        port: int = 0,
    ) -> None:
        self.path = path.rstrip("/")
        self.endpoints = {
            "jwks": "/jwks",
            "introspection": "/introspect",
            "token": "/token",
            "userinfo": "/userinfo",
            **(endpoints or {}),
        }
        self.revoked: set[str] = set()
        self.token_requests: list[dict[str, str]] = []
        self.token_lifetime = 300
        self._refresh: dict[str, str] = {}
        self.client_id = client_id
        self.client_secret = client_secret
        self.jwks_max_age = jwks_max_age
        self.metadata_style = metadata_style
        self.requests: Counter[str] = Counter()
        #: Most requests in progress at once, per endpoint (e.g. ``"/introspect"``).
        self.peak_concurrency: Counter[str] = Counter()
        self._in_flight: Counter[str] = Counter()
        self.faults: dict[str, Fault] = {}
        self.introspection_requests: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._keys: list[SigningKey] = []
        self._opaque: dict[str, _Opaque] = {}
        self._counter = 0
        algorithms = tuple(algorithms)
        if not algorithms:
            raise ValueError("LocalIssuer needs at least one algorithm")
        #: The algorithm that signs when none is named (the first of ``algorithms``).
        self.default_alg = algorithms[0]
        for alg in algorithms:
            self.add_key(alg)
        self._guards: list[TokenGuard] = []
        self._server = _StoppableServer(("127.0.0.1", port), _handler_for(self))
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``."""
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    @property
    def issuer(self) -> str:
        """The issuer identifier (``origin`` + ``path``)."""
        return self.origin + self.path

    @property
    def jwks_uri(self) -> str:
        return self.issuer + self.endpoints["jwks"]

    @property
    def introspection_endpoint(self) -> str:
        return self.issuer + self.endpoints["introspection"]

    @property
    def token_endpoint(self) -> str:
        return self.issuer + self.endpoints["token"]

    def start(self) -> LocalIssuer:
        """Serve in a background thread; returns ``self``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_until_stopped, name="LocalIssuer", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the socket and the guards made by :meth:`guard`."""
        for guard in self._guards:
            guard.close()
        if self._thread is not None:
            self._server.stop_serving()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> LocalIssuer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ keys

    def add_key(self, alg: str, *, kid: str | None = None) -> SigningKey:
        """Create a key for ``alg`` and publish it (HMAC keys are never published)."""
        with self._lock:
            self._counter += 1
            key = _make_key(alg, kid or f"{alg.lower()}-{self._counter}")
            self._keys.append(key)
            return key

    def key(self, alg: str | None = None, kid: str | None = None) -> SigningKey:
        """The newest key for ``alg`` (or with ``kid``)."""
        with self._lock:
            for key in reversed(self._keys):
                if (kid is None or key.kid == kid) and (alg is None or key.alg == alg):
                    return key
        raise KeyError(kid or alg)

    def rotate(self, alg: str = "RS256") -> SigningKey:
        """Publish a new key for ``alg``; new tokens use it. Old keys stay published."""
        return self.add_key(alg)

    def remove_key(self, kid: str) -> None:
        """Stop publishing ``kid`` (a withdrawn or compromised key)."""
        with self._lock:
            self._keys = [k for k in self._keys if k.kid != kid]

    def signing_keys(self) -> list[SigningKey]:
        """The keys now held, oldest first (a copy, e.g. to restore after a test)."""
        with self._lock:
            return list(self._keys)

    def restore_signing_keys(self, keys: Iterable[SigningKey]) -> None:
        """Replace the keys held by ``keys`` (as returned by :meth:`signing_keys`)."""
        with self._lock:
            self._keys = list(keys)

    def jwks(self) -> dict[str, Any]:
        """The published JWK Set."""
        with self._lock:
            return {"keys": [dict(k.public_jwk) for k in self._keys if k.published]}

    def hmac_secret(self, kid: str | None = None) -> bytes:
        """The shared secret of the newest HS256 key (for ``from_keys(hmac_keys=...)``)."""
        secret: bytes = self.key("HS256", kid).private
        return secret

    # ------------------------------------------------------------------ tokens

    def claims(
        self,
        *,
        subject: str | None = "user-1",
        audience: str | list[str] | None = "https://api.test",
        scope: str | list[str] | None = None,
        expires_in: float = 300,
        client_id: str | None = "client-app",
        extra_claims: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A typical access-token claim set (RFC 9068 §2.2).

        Args:
            subject / audience / scope / client_id: ``sub``, ``aud``,
                ``scope`` (a space-separated string or a list, sent as given)
                and ``client_id``; ``None`` leaves the claim out.
            expires_in: seconds until ``exp`` (negative: already expired).
            extra_claims: any other claims, added last (they may replace the
                ones above; a ``None`` value removes a claim). Only here:
                a misspelt keyword (``scopes=``) is a ``TypeError``, never a
                silent extra claim.
        """
        if isinstance(extra_claims, str) or (extra_claims is not None and not isinstance(extra_claims, Mapping)):
            raise TypeError("extra_claims must be a mapping of claim name to value")
        now = int(time.time())
        claims: dict[str, Any] = {"iss": self.issuer, "iat": now, "exp": int(now + expires_in), "jti": uuid.uuid4().hex}
        if subject is not None:
            claims["sub"] = subject
        if audience is not None:
            claims["aud"] = audience
        if scope is not None:
            claims["scope"] = scope
        if client_id is not None:
            claims["client_id"] = client_id
        claims.update(extra_claims or {})
        return {k: v for k, v in claims.items() if v is not None}

    def issue(
        self,
        *,
        alg: str = "RS256",
        kid: str | None = None,
        typ: str | None = "at+jwt",
        headers: Mapping[str, Any] | None = None,
        claims: Mapping[str, Any] | None = None,
        subject: str | None = "user-1",
        audience: str | list[str] | None = "https://api.test",
        scope: str | list[str] | None = None,
        expires_in: float = 300,
        client_id: str | None = "client-app",
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """Mint a signed JWT access token.

        ``claims`` replaces the claim set entirely; otherwise the claim
        keywords go to :meth:`claims` (any other claim goes in
        ``extra_claims``: an unknown keyword is a ``TypeError``).
        """
        key = self.key(alg, kid)
        if claims is not None:
            payload = dict(claims)
        else:
            payload = self.claims(
                subject=subject,
                audience=audience,
                scope=scope,
                expires_in=expires_in,
                client_id=client_id,
                extra_claims=extra_claims,
            )
        header: dict[str, Any] = {"kid": key.kid}
        if typ is not None:
            header["typ"] = typ
        header.update(headers or {})
        return pyjwt.encode(payload, key.private, algorithm=alg, headers=header)

    def issue_opaque(
        self,
        *,
        subject: str | None = "user-1",
        scope: str | list[str] | None = None,
        audience: str | list[str] | None = "https://api.test",
        expires_in: float = 300,
        client_id: str | None = "client-app",
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """Mint an opaque (reference) token known only to introspection.

        The keywords are those of :meth:`claims`; an unknown one is a ``TypeError``.
        """
        token = secrets.token_urlsafe(32)
        claims = self.claims(
            subject=subject,
            audience=audience,
            scope=scope,
            expires_in=expires_in,
            client_id=client_id,
            extra_claims=extra_claims,
        )
        claims["token_type"] = "Bearer"
        with self._lock:
            self._opaque[token] = _Opaque(claims)
        return token

    def revoke(self, token: str) -> None:
        """Make introspection answer ``active: false`` for ``token`` (opaque or JWT)."""
        with self._lock:
            if token in self._opaque:
                self._opaque[token].revoked = True
            self.revoked.add(token)

    # ------------------------------------------------------------------ guards

    def guard(
        self, *, audience: str | list[str] | None = "https://api.test", introspection: bool = True, **options: Any
    ) -> TokenGuard:
        """A :class:`TokenGuard` for this issuer via discovery (plain HTTP on loopback is allowed)."""
        if introspection:
            options.setdefault("client_id", self.client_id)
            options.setdefault("client_secret", self.client_secret)
        options.setdefault("fetch", FetchSettings())
        guard = TokenGuard.from_issuer(self.issuer, audience=audience, **options)
        self._guards.append(guard)
        return guard

    # ------------------------------------------------------------------ HTTP

    def metadata(self) -> dict[str, Any]:
        """The discovery document."""
        return {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "introspection_endpoint": self.introspection_endpoint,
            "token_endpoint": self.token_endpoint,
            "userinfo_endpoint": self.issuer + self.endpoints["userinfo"],
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "grant_types_supported": ["client_credentials"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        }

    def _client_authenticated(self, headers: Mapping[str, str], form: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        if auth[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(auth[6:].strip(), validate=True).decode()
            except ValueError:
                return False
            raw_id, _, raw_secret = decoded.partition(":")
            client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
        else:
            client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        return hmac.compare_digest(client_id.encode(), self.client_id.encode()) and hmac.compare_digest(
            secret.encode(), self.client_secret.encode()
        )

    def introspect(self, token: str) -> dict[str, Any]:
        """The RFC 7662 answer for ``token`` (opaque or one of our JWTs)."""
        with self._lock:
            entry = self._opaque.get(token)
        if entry is not None:
            if entry.revoked or entry.claims.get("exp", 0) <= time.time():
                return {"active": False}
            return {"active": True, **entry.claims}
        if token in self.revoked:
            return {"active": False}
        try:
            header = pyjwt.get_unverified_header(token)
            key = self.key(kid=header.get("kid"))
            verify_key = key.private if key.alg.startswith("HS") else key.private.public_key()
            claims = pyjwt.decode(token, verify_key, algorithms=[key.alg], options={"verify_aud": False})
        except Exception:  # noqa: BLE001 - anything unverifiable is simply inactive
            return {"active": False}
        return {"active": True, **claims}

    def _route(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        base = self.path
        if method == "GET":
            oidc = f"{base}/.well-known/openid-configuration"
            oauth = f"/.well-known/oauth-authorization-server{base}"
            if path == (oidc if self.metadata_style == "oidc" else oauth):
                return 200, {"Cache-Control": "max-age=600"}, json.dumps(self.metadata()).encode()
            if path == base + self.endpoints["jwks"]:
                extra = {"Cache-Control": f"max-age={self.jwks_max_age}"} if self.jwks_max_age is not None else {}
                return 200, {"Content-Type": "application/jwk-set+json", **extra}, json.dumps(self.jwks()).encode()
        if method == "GET" and path == base + self.endpoints["userinfo"]:
            auth = headers.get("authorization", "")
            answer = self.introspect(auth[7:]) if auth[:7].lower() == "bearer " else {"active": False}
            if not answer.get("active"):
                return 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'}, b'{"error":"invalid_token"}'
            info = {"sub": answer.get("sub"), "email": f"{answer.get('sub')}@example.test", "name": "Test User"}
            return 200, {}, json.dumps(info).encode()
        introspection_path = base + self.endpoints["introspection"]
        if method == "POST" and path in (introspection_path, base + self.endpoints["token"]):
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            if not self._client_authenticated(headers, form):
                return 401, {"WWW-Authenticate": 'Basic realm="issuer"'}, b'{"error":"invalid_client"}'
            if path == introspection_path:
                self.introspection_requests.append(form)
                if "token" not in form:
                    return 400, {}, b'{"error":"invalid_request"}'
                return 200, {"Cache-Control": "no-store"}, json.dumps(self.introspect(form["token"])).encode()
            grant = form.get("grant_type")
            if grant == "refresh_token":
                with self._lock:
                    scope = self._refresh.pop(form.get("refresh_token", ""), None)
                if scope is None:
                    return 400, {"Cache-Control": "no-store"}, b'{"error":"invalid_grant"}'
            elif grant == "client_credentials":
                scope = form.get("scope") or ""
            else:
                return 400, {}, b'{"error":"unsupported_grant_type"}'
            self.token_requests.append(form)
            token = self.issue(scope=scope or None, audience=form.get("resource", "https://api.test"))
            refresh = secrets.token_urlsafe(24)
            with self._lock:
                self._refresh[refresh] = scope
            # The shape IBM Liberty answers with (and most OAuth servers).
            answer = {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "refresh_token": refresh,
                "id_token": self.issue(typ="JWT", audience=self.client_id),
            }
            return 200, {"Cache-Control": "no-store"}, json.dumps(answer).encode()
        return 404, {}, b'{"error":"not_found"}'


def _handler_for(issuer: LocalIssuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            return  # quiet: tests read counters, not logs

        def _serve(self, method: str) -> None:
            path = urlsplit(self.path).path
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            name = path[len(issuer.path) :] if path.startswith(issuer.path + "/") else path
            with issuer._lock:
                issuer.requests[name] += 1
                fault = issuer.faults.get(name)
                issuer._in_flight[name] += 1
                issuer.peak_concurrency[name] = max(issuer.peak_concurrency[name], issuer._in_flight[name])
            try:
                self._respond(method, path, body, fault)
            finally:
                with issuer._lock:
                    issuer._in_flight[name] -= 1

        def _respond(self, method: str, path: str, body: bytes, fault: Fault | None) -> None:
            if fault is not None:
                if fault.delay:
                    time.sleep(fault.delay)
                if fault.drop:
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault.status:
                    self._send(fault.status, {"Content-Type": fault.content_type}, fault.body)
                    return
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, payload = issuer._route(method, path, headers, body)
            self._send(status, {"Content-Type": "application/json", **extra}, payload)

        def _send(self, status: int, headers: Mapping[str, str], payload: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            self._serve("POST")

    return Handler
