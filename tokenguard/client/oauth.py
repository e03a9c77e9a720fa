"""An ``httpx.Auth`` that obtains, refreshes, retries and revokes OAuth 2.0 access tokens.

Strategy: the token is obtained with the client-credentials grant (or the
refresh-token grant when the server issued a refresh token), attached as
``Authorization: Bearer``, refreshed ``refresh_margin`` seconds before
``expires_in`` runs out, re-obtained once when the API answers 401, and
revoked (RFC 7009) on close. One token request at a time per auth object
(a lock per flavour), so many concurrent requests cause one token request.
Token requests use their own HTTP client, never the client being authorised.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from typing import Any, Literal

import httpx

from .._http import AsyncCoalescer, SyncCoalescer, run_async, run_sync
from ..errors import ConfigurationError, ServiceUnavailable
from ..introspection import basic_credentials
from ..sources import FetchSettings, MetadataSource
from .tokens import AccessToken, NoStorePolicy, TokenEndpointError, client_assertion, parse_token_response

__all__ = ["ClientCredentialsAuth"]

TokenAuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt"]


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
        private_key: the key signing ``private_key_jwt`` assertions.
        scope / resource: requested scope and RFC 8707 resource indicator(s).
        refresh_margin: seconds before expiry at which a new token is fetched.
        revocation_endpoint: RFC 7009 endpoint; tokens are revoked on close.
        no_store: what to do when the token answer lacks
            ``Cache-Control: no-store`` (RFC 6749 §5.1): ``"warn"``,
            ``"refuse"`` or ``"ignore"``.
        timeout: seconds for token requests.
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str | None = None,
        *,
        token_endpoint: str | None = None,
        issuer: str | None = None,
        auth_method: TokenAuthMethod = "client_secret_basic",
        private_key: Any = None,
        assertion_algorithm: str = "RS256",
        scope: str | None = None,
        resource: str | Sequence[str] | None = None,
        refresh_margin: float = 30.0,
        revocation_endpoint: str | None = None,
        no_store: NoStorePolicy = "warn",
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if token_endpoint is None and issuer is None:
            raise ConfigurationError("give token_endpoint or issuer")
        if auth_method == "private_key_jwt" and private_key is None:
            raise ConfigurationError("private_key_jwt needs private_key")
        if auth_method != "private_key_jwt" and client_secret is None:
            raise ConfigurationError(f"{auth_method} needs client_secret")
        self.client_id = client_id
        self._secret = client_secret
        self.token_endpoint = token_endpoint
        self.revocation_endpoint = revocation_endpoint
        self.issuer = issuer
        self.auth_method = auth_method
        self._private_key = private_key
        self._assertion_algorithm = assertion_algorithm
        self.scope = scope
        self.resource = [resource] if isinstance(resource, str) else list(resource or [])
        self.refresh_margin = refresh_margin
        self.no_store = no_store
        self._timeout = timeout
        self._clock = clock
        # The same discovery the guard uses: exact issuer match, size cap, no redirects.
        self._discovery = MetadataSource(issuer, FetchSettings()) if issuer is not None else None
        self._token: AccessToken | None = None
        self._lock = threading.Lock()
        self._async_locks: dict[int, asyncio.Lock] = {}
        self.token_requests = 0

    def __repr__(self) -> str:
        return f"ClientCredentialsAuth(client_id={self.client_id!r}, token_endpoint={self.token_endpoint!r})"

    # ------------------------------------------------------------ pure request building

    def _form(self, refresh: AccessToken | None, endpoint: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
        form: list[tuple[str, str]] = []
        if refresh is not None and refresh.refresh_token:
            form.append(("grant_type", "refresh_token"))
            form.append(("refresh_token", refresh.refresh_token))
        else:
            form.append(("grant_type", "client_credentials"))
            if self.scope:
                form.append(("scope", self.scope))
            form.extend(("resource", r) for r in self.resource)
        return self._authenticate(form, endpoint)

    def _authenticate(self, form: list[tuple[str, str]], endpoint: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
        headers = {"Accept": "application/json"}
        if self.auth_method == "client_secret_basic":
            assert self._secret is not None
            headers["Authorization"] = basic_credentials(self.client_id, self._secret)
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
        self.token_endpoint = endpoint
        revocation = document.get("revocation_endpoint")
        if self.revocation_endpoint is None and isinstance(revocation, str):
            self.revocation_endpoint = revocation

    # ------------------------------------------------------------ sync

    def get_token_sync(self, *, force: bool = False) -> AccessToken:
        """The current token, obtained or refreshed if needed (one request at a time).

        ``force`` drops the current token first (e.g. after the API refused it).
        """
        if force:
            self._token = None
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
                token = self._request_sync(http, self._token)
            self._token = token
            return token

    def _discover_sync(self, http: httpx.Client) -> None:
        assert self._discovery is not None
        try:
            document = run_sync(self._discovery.metadata_flow(self._clock()), lambda: http, SyncCoalescer())
        except ServiceUnavailable as exc:
            raise TokenEndpointError("invalid_metadata", exc.description) from None
        self._metadata(document)

    def _request_sync(self, http: httpx.Client, previous: AccessToken | None) -> AccessToken:
        assert self.token_endpoint is not None
        if previous is not None and previous.refresh_token:
            try:
                return self._post_sync(http, previous)
            except TokenEndpointError:
                pass  # refresh refused (expired, revoked): start over with the client grant
        return self._post_sync(http, None)

    def _post_sync(self, http: httpx.Client, refresh: AccessToken | None) -> AccessToken:
        assert self.token_endpoint is not None
        form, headers = self._form(refresh, self.token_endpoint)
        self.token_requests += 1
        response = http.post(self.token_endpoint, data=dict(_multi(form)), headers=headers)
        return parse_token_response(
            response.status_code,
            _lower(response.headers),
            response.content,
            self._clock(),
            no_store=self.no_store,
            endpoint=self.token_endpoint,
        )

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
            token, self._token = self._token, None
        if token is None or self.revocation_endpoint is None:
            return
        form, headers = self._authenticate(
            [("token", token.access_token), ("token_type_hint", "access_token")], self.revocation_endpoint
        )
        try:
            with httpx.Client(timeout=self._timeout, follow_redirects=False) as http:
                http.post(self.revocation_endpoint, data=dict(_multi(form)), headers=headers)
        except httpx.HTTPError:
            pass

    # ------------------------------------------------------------ async

    async def get_token(self, *, force: bool = False) -> AccessToken:
        """Async twin of :meth:`get_token_sync`."""
        if force:
            self._token = None
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
                token = await self._request_async(http, self._token)
            self._token = token
            return token

    async def _discover_async(self, http: httpx.AsyncClient) -> None:
        assert self._discovery is not None
        try:
            flow = self._discovery.metadata_flow(self._clock())
            document = await run_async(flow, lambda: http, AsyncCoalescer())
        except ServiceUnavailable as exc:
            raise TokenEndpointError("invalid_metadata", exc.description) from None
        self._metadata(document)

    async def _request_async(self, http: httpx.AsyncClient, previous: AccessToken | None) -> AccessToken:
        if previous is not None and previous.refresh_token:
            try:
                return await self._post_async(http, previous)
            except TokenEndpointError:
                pass
        return await self._post_async(http, None)

    async def _post_async(self, http: httpx.AsyncClient, refresh: AccessToken | None) -> AccessToken:
        assert self.token_endpoint is not None
        form, headers = self._form(refresh, self.token_endpoint)
        self.token_requests += 1
        response = await http.post(self.token_endpoint, data=dict(_multi(form)), headers=headers)
        return parse_token_response(
            response.status_code,
            _lower(response.headers),
            response.content,
            self._clock(),
            no_store=self.no_store,
            endpoint=self.token_endpoint,
        )

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.get_token()
        request.headers["Authorization"] = f"Bearer {token.access_token}"
        response = yield request
        if response.status_code == 401:
            token = await self.get_token(force=self._token is token)
            request.headers["Authorization"] = f"Bearer {token.access_token}"
            yield request


def _lower(headers: httpx.Headers) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _multi(form: list[tuple[str, str]]) -> dict[str, list[str]]:
    # httpx encodes list values as repeated fields (several resource indicators).
    merged: dict[str, list[str]] = {}
    for name, value in form:
        merged.setdefault(name, []).append(value)
    return merged
