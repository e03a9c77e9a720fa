"""``httpx.Auth`` classes that obtain, refresh, retry and revoke OAuth 2.0 access tokens.

Strategy: the token is obtained with the client-credentials grant
(:class:`ClientCredentialsAuth`) or by exchanging an authorization code
(:class:`AuthorizationCodeAuth`), then with the refresh-token grant when the
server issued a refresh token; it is attached as
``Authorization: Bearer``, refreshed ``refresh_margin`` seconds before
``expires_in`` runs out, re-obtained once when the API answers 401, and
revoked (RFC 7009) on close. One token request at a time per auth object
(a lock per flavour), so many concurrent requests cause one token request.
Token requests use their own HTTP client, never the client being authorised.
Secrets only travel over https (loopback exempt, as for the guard's own
fetches), and an unreachable endpoint is a :class:`TokenEndpointUnreachable`
whose ``__cause__`` is the transport error.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import secrets
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterator, Sequence
from typing import Any, Literal, get_args

import httpx

from .._bounded_read import ACCEPT_ENCODING, read_async, read_sync
from .._effects import Flow, HttpRequest
from .._logtext import public_url
from .._runner import fetch_async, fetch_sync
from ..errors import ConfigurationError, ServiceUnavailable
from ..introspection import basic_credentials
from ..sources import FetchSettings, MetadataSource, check_url
from .tokens import (
    AccessToken,
    NoStorePolicy,
    TokenEndpointError,
    TokenEndpointUnreachable,
    client_assertion,
    parse_token_response,
)

__all__ = ["AuthorizationCodeAuth", "ClientCredentialsAuth", "pkce_pair"]

TokenAuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt"]
BasicEncoding = Literal["rfc6749", "plain"]


def pkce_pair() -> tuple[str, str]:
    """A fresh PKCE ``(code_verifier, code_challenge)`` pair for the ``S256`` method (RFC 7636 §4.1-4.2).

    Send the challenge (with ``code_challenge_method=S256``) in the
    authorization request; keep the verifier for :meth:`AuthorizationCodeAuth.exchange_code_sync`.
    """
    # 32 random bytes give a 43-character verifier, the minimum RFC 7636 §4.1 allows, with 256 bits.
    verifier = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _plain_basic(client_id: str, client_secret: str) -> str:
    # What many providers expect instead of RFC 6749 §2.3.1: base64("id:secret") without form-encoding.
    return "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode("ascii")


@contextlib.contextmanager
def _unreachable(endpoint: str) -> Iterator[None]:
    """Translate transport failures once, at the edge, keeping the cause."""
    try:
        yield
    except httpx.TransportError as exc:
        raise TokenEndpointUnreachable(f"{public_url(endpoint)} could not be reached ({type(exc).__name__})") from exc


#: The largest token endpoint answer read: a token answer is a few KiB (a JWT
#: access token with its claims); a server streaming more is refused before it
#: fills this process's memory.
MAX_TOKEN_ANSWER_BYTES = 256 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def _too_large(response: httpx.Response) -> TokenEndpointError:
    return TokenEndpointError(
        "invalid_response", f"token answer larger than {MAX_TOKEN_ANSWER_BYTES} bytes", status=response.status_code
    )


def _offering(headers: dict[str, str]) -> dict[str, str]:
    """``headers`` offering only the content-codings the bounded reader inflates itself."""
    return {**headers, "Accept-Encoding": ACCEPT_ENCODING}


@contextlib.contextmanager
def _undecodable(response: httpx.Response) -> Iterator[None]:
    """A coding not offered, or a corrupt compressed body: the endpoint's fault, said as such."""
    try:
        yield
    except httpx.DecodingError as exc:
        raise TokenEndpointError(
            "invalid_response", "token answer could not be decoded", status=response.status_code
        ) from exc


def _post_bounded_sync(http: httpx.Client, endpoint: str, data: Any, headers: dict[str, str]) -> _Answer:
    """POST the token request; read at most :data:`MAX_TOKEN_ANSWER_BYTES` of the answer."""
    with http.stream("POST", endpoint, data=data, headers=_offering(headers)) as response, _undecodable(response):
        body = read_sync(response, MAX_TOKEN_ANSWER_BYTES, _too_large)
        return _Answer(response.status_code, _lower(response.headers), body)


async def _post_bounded_async(http: httpx.AsyncClient, endpoint: str, data: Any, headers: dict[str, str]) -> _Answer:
    """Async twin of :func:`_post_bounded_sync`."""
    async with http.stream("POST", endpoint, data=data, headers=_offering(headers)) as response:
        with _undecodable(response):
            body = await read_async(response, MAX_TOKEN_ANSWER_BYTES, _too_large)
        return _Answer(response.status_code, _lower(response.headers), body)


class ClientCredentialsAuth(httpx.Auth):
    """Bearer tokens for outgoing calls, managed for you.

    Args:
        client_id: this service's client id.
        client_secret: its secret (``client_secret_basic`` / ``client_secret_post``).
        token_endpoint: the token URL; or give ``issuer`` to discover it.
        issuer: discover ``token_endpoint`` and ``revocation_endpoint`` from
            its metadata (the document's ``issuer`` must match exactly).
        auth_method: ``client_secret_basic`` (default), ``client_secret_post``
            or ``private_key_jwt`` (RFC 7523, with ``private_key``).
        basic_encoding: ``"rfc6749"`` (default) form-urlencodes id and secret
            before base64 (RFC 6749 §2.3.1); ``"plain"`` sends
            ``base64(id:secret)`` for providers that do not decode them (their
            secrets with ``+ / : %`` fail otherwise).
        private_key: the key signing ``private_key_jwt`` assertions.
        scope / resource: requested scope and RFC 8707 resource indicator(s).
        refresh_margin: seconds before expiry at which a new token is fetched.
        revocation_endpoint: RFC 7009 endpoint; tokens are revoked on close.
        no_store: what to do when the token answer lacks
            ``Cache-Control: no-store`` or ``Pragma: no-cache`` (RFC 6749
            §5.1; one policy for both): ``"warn"``, ``"refuse"`` or ``"ignore"``.
        timeout: seconds for token requests.
        require_https: refuse plain-http token, revocation and issuer URLs
            except on loopback addresses (the guard's rule); ``False`` only
            for trusted test networks.

    Raises:
        ConfigurationError: a missing endpoint or credential, an unknown
            ``auth_method``/``basic_encoding``/``no_store``, or a plain-http URL.
    """

    #: Whether a refused refresh may fall back to a fresh grant (the client grant can; a code cannot).
    _can_start_over = True

    def __init__(
        self,
        client_id: str,
        client_secret: str | None = None,
        *,
        token_endpoint: str | None = None,
        issuer: str | None = None,
        auth_method: TokenAuthMethod = "client_secret_basic",
        basic_encoding: BasicEncoding = "rfc6749",
        private_key: Any = None,
        assertion_algorithm: str = "RS256",
        scope: str | None = None,
        resource: str | Sequence[str] | None = None,
        refresh_margin: float = 30.0,
        revocation_endpoint: str | None = None,
        no_store: NoStorePolicy = "warn",
        timeout: float = 10.0,
        require_https: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if token_endpoint is None and issuer is None:
            raise ConfigurationError("give token_endpoint or issuer")
        if auth_method not in get_args(TokenAuthMethod):
            raise ConfigurationError(f"auth_method must be one of {', '.join(get_args(TokenAuthMethod))}")
        if basic_encoding not in get_args(BasicEncoding):
            raise ConfigurationError(f"basic_encoding must be one of {', '.join(get_args(BasicEncoding))}")
        if no_store not in get_args(NoStorePolicy):
            raise ConfigurationError(f"no_store must be one of {', '.join(get_args(NoStorePolicy))}")
        # The guard's rule: secrets and tokens travel over https, loopback exempt (by address).
        for name, url in (
            ("token_endpoint", token_endpoint),
            ("issuer", issuer),
            ("revocation_endpoint", revocation_endpoint),
        ):
            if url is not None:
                check_url(url, require_https=require_https, what=name, opt_out="require_https=False")
        if auth_method == "private_key_jwt" and private_key is None:
            raise ConfigurationError("private_key_jwt needs private_key")
        if auth_method != "private_key_jwt" and client_secret is None:
            raise ConfigurationError(f"{auth_method} needs client_secret")
        if auth_method == "client_secret_basic" and basic_encoding == "plain" and ":" in client_id:
            # RFC 7617 §2: the user-id cannot contain a colon; the server would split it there.
            raise ConfigurationError(
                'basic_encoding="plain" cannot carry a client_id containing ":" (RFC 7617 §2); '
                'use basic_encoding="rfc6749" or auth_method="client_secret_post"'
            )
        self.client_id = client_id
        self._secret = client_secret
        self.token_endpoint = token_endpoint
        self.revocation_endpoint = revocation_endpoint
        self.issuer = issuer
        self.auth_method = auth_method
        self.basic_encoding = basic_encoding
        self.require_https = require_https
        self._private_key = private_key
        self._assertion_algorithm = assertion_algorithm
        self.scope = scope
        self.resource = [resource] if isinstance(resource, str) else list(resource or [])
        self.refresh_margin = refresh_margin
        self.no_store = no_store
        self._timeout = timeout
        self._clock = clock
        # The same discovery the guard uses: exact issuer match, size cap, no redirects.
        fetch = FetchSettings(require_https=require_https)
        self._discovery = MetadataSource(issuer, fetch) if issuer is not None else None
        self._discovery_cause: httpx.TransportError | None = None
        self._token: AccessToken | None = None
        # A token the API refused (forced out): its refresh token may still get the next one.
        self._refused: AccessToken | None = None
        self._lock = threading.Lock()
        self._async_locks: dict[int, asyncio.Lock] = {}
        self.token_requests = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(client_id={self.client_id!r}, token_endpoint={self.token_endpoint!r})"

    # ------------------------------------------------------------ pure request building

    def _form(self, refresh: AccessToken | None, endpoint: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
        form: list[tuple[str, str]] = []
        if refresh is not None and refresh.refresh_token:
            form.append(("grant_type", "refresh_token"))
            form.append(("refresh_token", refresh.refresh_token))
        else:
            form.extend(self._grant_form())
        return self._authenticate(form, endpoint)

    def _grant_form(self) -> list[tuple[str, str]]:
        """The form of a token request made without a refresh token (RFC 6749 §4.4.2)."""
        form = [("grant_type", "client_credentials")]
        if self.scope:
            form.append(("scope", self.scope))
        form.extend(("resource", r) for r in self.resource)
        return form

    def _authenticate(self, form: list[tuple[str, str]], endpoint: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
        headers = {"Accept": "application/json"}
        if self.auth_method == "client_secret_basic":
            assert self._secret is not None
            encode = basic_credentials if self.basic_encoding == "rfc6749" else _plain_basic
            headers["Authorization"] = encode(self.client_id, self._secret)
        elif self.auth_method == "client_secret_post":
            assert self._secret is not None
            form = [*form, ("client_id", self.client_id), ("client_secret", self._secret)]
        else:
            assertion = client_assertion(
                self.client_id, endpoint, self._private_key, self._clock(), algorithm=self._assertion_algorithm
            )
            form = [
                *form,
                ("client_id", self.client_id),
                ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                ("client_assertion", assertion),
            ]
        return form, headers

    def _discovery_failure(self, exc: ServiceUnavailable) -> TokenEndpointError:
        """Our error for a failed discovery; ``_discovery_cause`` is then its transport error, if any."""
        cause = _transport_cause(exc)
        if cause is None and exc.__cause__ is None and exc.__context__ is None:
            # Raised without a fetch: the discovery is cooling down after the failure we remember.
            cause = self._discovery_cause
        self._discovery_cause = cause
        if cause is not None:
            return TokenEndpointUnreachable(f"issuer metadata could not be fetched: {exc.description}")
        return TokenEndpointError("invalid_metadata", exc.description)

    def _usable(self) -> AccessToken | None:
        token = self._token
        if token is None or token.needs_refresh(self._clock(), self.refresh_margin):
            return None
        return token

    def _metadata(self, document: Any) -> None:
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            raise TokenEndpointError("invalid_metadata", "issuer metadata missing or for another issuer")
        endpoint = document.get("token_endpoint")
        if not isinstance(endpoint, str):
            raise TokenEndpointError("invalid_metadata", "issuer metadata has no token_endpoint")
        revocation = document.get("revocation_endpoint")
        try:
            # Discovered URLs follow the same rule as configured ones.
            check_url(endpoint, require_https=self.require_https, what="token_endpoint", opt_out="require_https=False")
            if self.revocation_endpoint is None and isinstance(revocation, str):
                check_url(
                    revocation,
                    require_https=self.require_https,
                    what="revocation_endpoint",
                    opt_out="require_https=False",
                )
        except ConfigurationError as exc:
            raise TokenEndpointError("invalid_metadata", str(exc)) from None
        self.token_endpoint = endpoint
        if self.revocation_endpoint is None and isinstance(revocation, str):
            self.revocation_endpoint = revocation

    # ------------------------------------------------------------ sync

    def get_token_sync(self, *, force: bool = False) -> AccessToken:
        """The current token, obtained or refreshed if needed (one request at a time).

        ``force`` drops the current token first (e.g. after the API refused it);
        its refresh token, if any, is still used to get the next one.
        """
        if force:
            self._refused, self._token = self._token or self._refused, None
        token = self._usable()
        if token is not None:
            return token
        with self._lock:
            token = self._usable()  # another thread may have fetched one meanwhile
            if token is not None:
                return token
            with httpx.Client(timeout=self._timeout, follow_redirects=False) as http:
                if self.token_endpoint is None:
                    self._discover_sync(http)
                assert self.token_endpoint is not None
                token = self._request_sync(http, self._token or self._refused)
            self._token, self._refused = token, None
            return token

    def _discover_sync(self, http: httpx.Client) -> None:
        assert self._discovery is not None
        try:
            document = _discover_with_sync(self._discovery.metadata_flow(self._clock()), http)
        except ServiceUnavailable as exc:
            raise self._discovery_failure(exc) from (self._discovery_cause or exc)
        self._metadata(document)

    def _token_request(
        self, refresh: AccessToken | None, grant: list[tuple[str, str]] | None
    ) -> tuple[str, dict[str, list[str]], dict[str, str]]:
        """Endpoint, form and headers of one token request (sync and async send them alike)."""
        assert self.token_endpoint is not None
        if grant is None:
            form, headers = self._form(refresh, self.token_endpoint)
        else:
            form, headers = self._authenticate(grant, self.token_endpoint)
        self.token_requests += 1
        return self.token_endpoint, dict(_multi(form)), headers

    def _token_answer(self, refresh: AccessToken | None, answer: _Answer) -> AccessToken:
        """The token endpoint's answer as an :class:`AccessToken` (refresh and ID tokens carried over)."""
        assert self.token_endpoint is not None
        return _carried(
            refresh,
            parse_token_response(
                answer.status,
                answer.headers,
                answer.body,
                self._clock(),
                no_store=self.no_store,
                endpoint=self.token_endpoint,
            ),
        )

    def _request_sync(self, http: httpx.Client, previous: AccessToken | None) -> AccessToken:
        assert self.token_endpoint is not None
        if previous is not None and previous.refresh_token:
            try:
                return self._post_sync(http, previous)
            except TokenEndpointUnreachable:
                raise
            except TokenEndpointError:
                if not self._can_start_over:
                    raise
                # refresh refused (expired, revoked): start over with the client grant
        return self._post_sync(http, None)

    def _post_sync(
        self, http: httpx.Client, refresh: AccessToken | None, grant: list[tuple[str, str]] | None = None
    ) -> AccessToken:
        endpoint, data, headers = self._token_request(refresh, grant)
        with _unreachable(endpoint):
            answer = _post_bounded_sync(http, endpoint, data, headers)
        return self._token_answer(refresh, answer)

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.get_token_sync()
        request.headers["Authorization"] = f"Bearer {token.access_token}"
        response = yield request
        if response.status_code == 401:
            # The API refused our token (revoked, rotated keys...): one retry with a fresh one.
            token = self.get_token_sync(force=self._token is token)
            request.headers["Authorization"] = f"Bearer {token.access_token}"
            yield request

    def close(self) -> None:
        """Revoke the current token (RFC 7009, best effort) and forget it."""
        with self._lock:
            token, self._token, self._refused = self._token, None, None
        if token is None or self.revocation_endpoint is None:
            return
        form, headers = self._authenticate(
            [("token", token.access_token), ("token_type_hint", "access_token")], self.revocation_endpoint
        )
        try:
            with httpx.Client(timeout=self._timeout, follow_redirects=False) as http:
                # The answer is not read: whatever the endpoint says, the token is forgotten.
                with http.stream("POST", self.revocation_endpoint, data=dict(_multi(form)), headers=headers):
                    pass
        except httpx.HTTPError:
            pass

    # ------------------------------------------------------------ async

    async def get_token(self, *, force: bool = False) -> AccessToken:
        """Async twin of :meth:`get_token_sync`."""
        if force:
            self._refused, self._token = self._token or self._refused, None
        token = self._usable()
        if token is not None:
            return token
        lock = self._async_locks.setdefault(id(asyncio.get_running_loop()), asyncio.Lock())
        async with lock:
            token = self._usable()
            if token is not None:
                return token
            async with httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as http:
                if self.token_endpoint is None:
                    await self._discover_async(http)
                token = await self._request_async(http, self._token or self._refused)
            self._token, self._refused = token, None
            return token

    async def _discover_async(self, http: httpx.AsyncClient) -> None:
        assert self._discovery is not None
        try:
            document = await _discover_with_async(self._discovery.metadata_flow(self._clock()), http)
        except ServiceUnavailable as exc:
            raise self._discovery_failure(exc) from (self._discovery_cause or exc)
        self._metadata(document)

    async def _request_async(self, http: httpx.AsyncClient, previous: AccessToken | None) -> AccessToken:
        if previous is not None and previous.refresh_token:
            try:
                return await self._post_async(http, previous)
            except TokenEndpointUnreachable:
                raise
            except TokenEndpointError:
                if not self._can_start_over:
                    raise
        return await self._post_async(http, None)

    async def _post_async(
        self, http: httpx.AsyncClient, refresh: AccessToken | None, grant: list[tuple[str, str]] | None = None
    ) -> AccessToken:
        endpoint, data, headers = self._token_request(refresh, grant)
        with _unreachable(endpoint):
            answer = await _post_bounded_async(http, endpoint, data, headers)
        return self._token_answer(refresh, answer)

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.get_token()
        request.headers["Authorization"] = f"Bearer {token.access_token}"
        response = yield request
        if response.status_code == 401:
            token = await self.get_token(force=self._token is token)
            request.headers["Authorization"] = f"Bearer {token.access_token}"
            yield request


_VERIFIER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


class AuthorizationCodeAuth(ClientCredentialsAuth):
    """Tokens obtained by exchanging an authorization code, then refreshed (RFC 6749 §4.1.3, §6).

    The grant IBM Liberty documents for its token endpoint
    (``/oidc/endpoint/<provider>/token``): after the user authorised at the
    authorization endpoint and came back to ``redirect_uri`` with a ``code``,
    :meth:`exchange_code_sync` (or :meth:`exchange_code`) trades it, with the
    PKCE ``code_verifier`` (RFC 7636 §4.5) when one was used, for an access
    token, refresh token and ID token. The auth then behaves like
    :class:`ClientCredentialsAuth`: Bearer attached, refreshed before expiry
    with the refresh-token grant, revoked on close. There is no grant to fall
    back on: a refused refresh (or no token yet) raises, and the user must
    authorise again.

    Args:
        client_id / client_secret: the client registered with the provider.
        redirect_uri: the redirect URI of the authorization request (RFC 6749
            §4.1.3 requires the same value in the exchange).
        options: any other :class:`ClientCredentialsAuth` keyword
            (``token_endpoint`` or ``issuer``, ``auth_method``, ``no_store``…).

    Raises:
        ConfigurationError: as for :class:`ClientCredentialsAuth`, or a
            ``redirect_uri`` that is not an absolute URI.
    """

    _can_start_over = False

    def __init__(self, client_id: str, client_secret: str | None = None, *, redirect_uri: str, **options: Any) -> None:
        if not isinstance(redirect_uri, str) or ":" not in redirect_uri or "#" in redirect_uri:
            # RFC 6749 §3.1.2: an absolute URI without a fragment.
            raise ConfigurationError("redirect_uri must be an absolute URI without a fragment")
        super().__init__(client_id, client_secret, **options)
        self.redirect_uri = redirect_uri

    def _grant_form(self) -> list[tuple[str, str]]:
        raise TokenEndpointError("login_required", "no usable token: exchange a new authorization code")

    def _exchange_form(self, code: str, code_verifier: str | None) -> list[tuple[str, str]]:
        if not isinstance(code, str) or not code:
            raise ValueError("code must be a non-empty string")
        form = [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", self.redirect_uri)]
        if code_verifier is not None:
            # RFC 7636 §4.1: 43 to 128 unreserved characters.
            if not (43 <= len(code_verifier) <= 128) or not set(code_verifier) <= _VERIFIER:
                raise ValueError("code_verifier must be 43-128 unreserved characters (RFC 7636 §4.1)")
            form.append(("code_verifier", code_verifier))
        return form

    def exchange_code_sync(self, code: str, *, code_verifier: str | None = None) -> AccessToken:
        """Trade an authorization code for tokens and keep them for later requests.

        Args:
            code: the ``code`` the provider sent to ``redirect_uri``.
            code_verifier: the PKCE verifier whose challenge the authorization
                request carried (see :func:`pkce_pair`).

        Returns:
            The token (access, refresh and ID token, expiry), also held for
            the requests this auth signs from now on.

        Raises:
            ValueError: an empty code or a malformed verifier.
            InvalidGrant: the code is invalid, used or expired, or the
                verifier does not match: start a new authorization.
            InvalidClient: the client credentials were refused.
            TokenEndpointUnreachable: the token endpoint could not be reached.
        """
        form = self._exchange_form(code, code_verifier)
        with self._lock, httpx.Client(timeout=self._timeout, follow_redirects=False) as http:
            if self.token_endpoint is None:
                self._discover_sync(http)
            token = self._post_sync(http, None, form)
            self._token = token
            return token

    async def exchange_code(self, code: str, *, code_verifier: str | None = None) -> AccessToken:
        """Async twin of :meth:`exchange_code_sync`."""
        form = self._exchange_form(code, code_verifier)
        lock = self._async_locks.setdefault(id(asyncio.get_running_loop()), asyncio.Lock())
        async with lock, httpx.AsyncClient(timeout=self._timeout, follow_redirects=False) as http:
            if self.token_endpoint is None:
                await self._discover_async(http)
            token = await self._post_async(http, None, form)
            self._token = token
            return token


def _discover_with_sync(flow: Flow[dict[str, Any]], http: httpx.Client) -> dict[str, Any]:
    # The guard's runners coalesce calls and re-raise a copy of the failure; one token client
    # needs neither, and keeping the original exception keeps its transport error as __cause__.
    try:
        request = next(flow)
        while True:
            if not isinstance(request, HttpRequest):  # pragma: no cover - discovery only fetches
                raise TypeError(f"unexpected discovery effect {type(request).__name__}")
            try:
                reply = fetch_sync(http, request)
            except ServiceUnavailable as exc:
                request = flow.throw(exc)
                continue
            request = flow.send(reply)
    except StopIteration as done:
        document: dict[str, Any] = done.value
        return document
    finally:
        flow.close()


async def _discover_with_async(flow: Flow[dict[str, Any]], http: httpx.AsyncClient) -> dict[str, Any]:
    try:
        request = next(flow)
        while True:
            if not isinstance(request, HttpRequest):  # pragma: no cover - discovery only fetches
                raise TypeError(f"unexpected discovery effect {type(request).__name__}")
            try:
                reply = await fetch_async(http, request)
            except ServiceUnavailable as exc:
                request = flow.throw(exc)
                continue
            request = flow.send(reply)
    except StopIteration as done:
        document: dict[str, Any] = done.value
        return document
    finally:
        flow.close()


def _transport_cause(exc: BaseException) -> httpx.TransportError | None:
    """The transport error behind a discovery failure, however the flow chained it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, httpx.TransportError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _carried(previous: AccessToken | None, token: AccessToken) -> AccessToken:
    """A refreshed token keeps the refresh token (and ID token) the answer did not replace.

    RFC 6749 §6: the server MAY issue a new refresh token, and then the old one
    is discarded; when it issues none, the one we hold stays valid and is used
    for the next refresh (otherwise a code-flow client would need the user
    again after one refresh). OpenID Connect Core §12.2 likewise makes the ID
    token optional in a refresh answer.
    """
    if previous is None or (token.refresh_token and token.id_token):
        return token
    return dataclasses.replace(
        token,
        refresh_token=token.refresh_token or previous.refresh_token,
        id_token=token.id_token or previous.id_token,
    )


def _lower(headers: httpx.Headers) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _multi(form: list[tuple[str, str]]) -> dict[str, list[str]]:
    # httpx encodes list values as repeated fields (several resource indicators).
    merged: dict[str, list[str]] = {}
    for name, value in form:
        merged.setdefault(name, []).append(value)
    return merged
