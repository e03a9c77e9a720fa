"""The DIAN identity service (Colombia): login, refresh, revoke, and an ``httpx.Auth``.

DIAN's token service is not OAuth-standard:

* ``POST {base}/identidad/sts/v1/tokens/login`` with an empty body,
  ``Content-Type: application/json`` and query parameters
  ``grant_type=password`` (the service's table spells it ``grant-type``),
  ``client_id``, ``client_secret`` (encrypted), ``tipoDocumento``,
  ``nroDocumento``, ``nit``, ``password`` (encrypted);
* ``POST .../tokens/refresh`` and ``.../tokens/revoke`` with
  ``Authorization: Bearer <token>`` and ``ClientId`` headers (revoke takes
  the access token or the ``idToken``);
* answers are a camelCase ``DToken``; any status but 200 is an error, 429
  and 503 mean retry later.

Field encryption: plaintext ``[<value>]-[<timestamp>]``, the timestamp being
Colombian time (UTC-05:00) as ``YYYY-MM-DDTHH:MM:SS``; AES-128-CBC with the
16-character ``EncryptionKey`` DIAN issued, a zero IV and PKCS#7 padding;
standard base64. DIAN refuses timestamps more than 3 minutes off, so every
request is encrypted at send time.

Credentials in a URL end up in logs (httpx logs every request URL at INFO):
a filter on the ``httpx`` logger redacts the query of the login URLs our
clients registered, and nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

import httpx
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .._bounded_read import ACCEPT_ENCODING, read_async, read_sync
from ..errors import ConfigurationError
from ..sources import check_url

__all__ = [
    "DIAN_PRODUCTION",
    "DIAN_TEST",
    "AsyncDianClient",
    "DianAuth",
    "DianClient",
    "DianError",
    "DianToken",
    "RevokeTarget",
    "decrypt_field",
    "encrypt_field",
]

DIAN_PRODUCTION = "https://api.dian.gov.co"
DIAN_TEST = "https://apipruebasexternas.dian.gov.co"
COLOMBIA = timezone(timedelta(hours=-5))
_PATH = "/identidad/sts/v1/tokens"
_ZERO_IV = bytes(16)


def _key(encryption_key: str) -> bytes:
    key = encryption_key.encode("ascii")
    if len(key) != 16:
        raise ConfigurationError("DIAN's EncryptionKey must be 16 ASCII characters (AES-128)")
    return key


def encrypt_field(value: str, encryption_key: str, now: float) -> str:
    """Encrypt ``value`` the way DIAN expects, stamped with ``now`` in Colombian time.

    The reverse of :func:`decrypt_field`.
    """
    stamp = datetime.fromtimestamp(now, COLOMBIA).strftime("%Y-%m-%dT%H:%M:%S")
    padder = padding.PKCS7(128).padder()
    data = padder.update(f"[{value}]-[{stamp}]".encode()) + padder.finalize()
    # AES-CBC with a zero IV is DIAN's protocol, not a choice of ours.
    encryptor = Cipher(algorithms.AES(_key(encryption_key)), modes.CBC(_ZERO_IV)).encryptor()  # noqa: S305
    return base64.b64encode(encryptor.update(data) + encryptor.finalize()).decode("ascii")


def decrypt_field(ciphertext: str, encryption_key: str) -> tuple[str, datetime]:
    """Decrypt a field: the value and its timestamp (aware, Colombian time).

    The reverse of :func:`encrypt_field` (used by test servers reproducing DIAN).

    Raises:
        ValueError: not a ciphertext of the expected shape.
    """
    decryptor = Cipher(algorithms.AES(_key(encryption_key)), modes.CBC(_ZERO_IV)).decryptor()  # noqa: S305
    padded = decryptor.update(base64.b64decode(ciphertext, validate=True)) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    plain = (unpadder.update(padded) + unpadder.finalize()).decode()
    if not (plain.startswith("[") and plain.endswith("]") and "]-[" in plain):
        raise ValueError("not a DIAN field")
    value, _, stamp = plain[1:-1].rpartition("]-[")
    return value, datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=COLOMBIA)


class DianError(Exception):
    """DIAN refused or failed: ``status`` and the error object it sent, if any.

    ``retry_after`` is set for 429/503 once retries are exhausted.
    """

    def __init__(self, message: str, *, status: int, detail: Any = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class DianToken:
    """A ``DToken``. ``expires_at`` is computed from ``expireIn`` (seconds), which varies."""

    access_token: str = field(repr=False)
    id_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    token_type: str
    expires_at: float
    client_id: str
    obtained_at: float | None = None

    @classmethod
    def from_answer(cls, document: Any, now: float) -> DianToken:
        """Read a DToken answer; ``clientId`` may arrive padded with spaces."""
        if not isinstance(document, dict):
            raise DianError("DIAN answer is not a JSON object", status=200)
        try:
            expire_in = float(document["expireIn"])
            if not math.isfinite(expire_in):
                # NaN made the token never usable (a login per request), inf never refreshed it.
                raise ValueError("expireIn is not a finite number")
            return cls(
                access_token=str(document["accessToken"]),
                id_token=str(document.get("idToken") or ""),
                refresh_token=str(document.get("refreshToken") or ""),
                token_type=str(document.get("tokenType") or "Bearer"),
                expires_at=now + expire_in,
                client_id=str(document.get("clientId") or "").strip(),
                obtained_at=now,
            )
        except (KeyError, TypeError, ValueError):
            raise DianError("DIAN answer is not a DToken", status=200) from None


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    url: str
    params: dict[str, str] | None
    headers: dict[str, str]

    def stream_arguments(self) -> dict[str, Any]:
        """The request as ``httpx.Client.stream`` / ``AsyncClient.stream`` take it, offering only
        the content-codings the bounded reader inflates itself."""
        return {
            "method": self.method,
            "url": self.url,
            "params": self.params,
            "headers": {**self.headers, "Accept-Encoding": ACCEPT_ENCODING},
            "content": b"",
        }


RevokeTarget = Literal["access_token", "id_token", "both"]

#: Login query parameters whose values never reach a log record.
_PUBLIC_LOGIN_PARAMS = frozenset({"client_id"})


class _LoginURLRedactor(logging.Filter):
    """Redacts the credentials in our login URLs from httpx's request log lines.

    DIAN takes ``client_secret``, ``password`` and the user's identity in the
    login URL's query string, and httpx logs every request URL at INFO
    (``HTTP Request: POST <url> ...``). The filter sits on the ``httpx``
    logger and touches only URLs whose scheme, host, port and path are a
    login endpoint a :class:`DianClient` registered: other applications'
    log lines are left alone.
    """

    def __init__(self) -> None:
        super().__init__()
        self._login_urls: set[str] = set()
        self._lock = threading.Lock()

    def register(self, login_url: str) -> None:
        # Normalised as httpx prints request URLs (lower-case host, no default port).
        with self._lock:
            self._login_urls.add(_normalised(login_url))

    def redact(self, value: object, grant_parameter_names: frozenset[str]) -> object:
        text = str(value) if isinstance(value, httpx.URL | str) else None
        if text is None:
            return value
        base, question, query = text.partition("?")
        if not question or _normalised(base) not in self._login_urls:
            return value
        kept = [
            f"{name}={val}" if name in _PUBLIC_LOGIN_PARAMS or name in grant_parameter_names else f"{name}=[redacted]"
            for name, _, val in (pair.partition("=") for pair in query.split("&"))
        ]
        return f"{base}?{'&'.join(kept)}"

    def filter(self, record: logging.LogRecord) -> bool:
        if self._login_urls and isinstance(record.args, tuple):
            grants = frozenset({"grant_type", "grant-type"})
            record.args = tuple(self.redact(arg, grants) for arg in record.args)
        if self._login_urls and isinstance(record.msg, str) and "?" in record.msg:
            record.msg = " ".join(str(self.redact(word, frozenset())) for word in record.msg.split(" "))
        return True


_REDACTOR = _LoginURLRedactor()


def _normalised(url: str) -> str:
    try:
        return str(httpx.URL(url).copy_with(query=None, fragment=None))
    except (httpx.InvalidURL, TypeError, ValueError):
        return url


def _guard_logs() -> None:
    # Checked before every request: a logging.config.dictConfig() run later may have reset the filters.
    # Only httpx logs URLs (httpcore's DEBUG records name the method, host and port, never the query).
    log = logging.getLogger("httpx")
    if _REDACTOR not in log.filters:
        log.addFilter(_REDACTOR)


class _DianProtocol:
    """What the sync and async clients share: configuration, request building, answer reading.

    No I/O here; :class:`DianClient` and :class:`AsyncDianClient` only move bytes.
    """

    def __init__(
        self,
        base_url: str,
        *,
        client_id: str,
        client_secret: str,
        encryption_key: str,
        tipo_documento: str,
        nro_documento: str,
        nit: str,
        password: str,
        encrypt: bool,
        grant_parameter: str,
        max_retries: int,
        max_backoff: float,
        require_https: bool,
        clock: Callable[[], float],
    ) -> None:
        if encrypt:
            _key(encryption_key)
        # The guard's rule: credentials travel over https, loopback exempt (by address).
        check_url(base_url, require_https=require_https, what="base_url", opt_out="require_https=False")
        if grant_parameter not in ("grant_type", "grant-type"):
            # The service's table says "grant-type", its example "grant_type"; nothing else is documented.
            raise ConfigurationError('grant_parameter must be "grant_type" or "grant-type"')
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError("max_retries must be an integer >= 0")
        if isinstance(max_backoff, bool) or not isinstance(max_backoff, int | float) or not 0 <= max_backoff < math.inf:
            # A negative wait reached time.sleep() as a ValueError on the first 429; NaN never waited at all.
            raise ConfigurationError("max_backoff must be a number of seconds >= 0")
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self._secret = client_secret
        self._encryption_key = encryption_key
        self._identity = {"tipoDocumento": tipo_documento, "nroDocumento": nro_documento, "nit": nit}
        self._password = password
        self.encrypt = encrypt
        self.grant_parameter = grant_parameter
        self.max_retries = max_retries
        self.max_backoff = max_backoff
        self._clock = clock
        _REDACTOR.register(f"{self.base_url}{_PATH}/login")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, client_id={self.client_id!r})"

    def _protect(self, value: str) -> str:
        return encrypt_field(value, self._encryption_key, self._clock()) if self.encrypt else value

    def _login_request(self) -> _Request:
        # Encrypted now, at send time: DIAN refuses timestamps 3 minutes off.
        params = {
            self.grant_parameter: "password",
            "client_id": self.client_id,
            "client_secret": self._protect(self._secret),
            **self._identity,
            "password": self._protect(self._password),
        }
        return _Request("POST", f"{self.base_url}{_PATH}/login", params, {"Content-Type": "application/json"})

    def _bearer_request(self, action: str, bearer: str) -> _Request:
        headers = {"Authorization": f"Bearer {bearer}", "ClientId": self.client_id, "Content-Type": "application/json"}
        return _Request("POST", f"{self.base_url}{_PATH}/{action}", None, headers)

    def _revoke_bearers(self, token: DianToken, which: RevokeTarget) -> list[str]:
        if which not in ("access_token", "id_token", "both"):
            raise ValueError('which must be "access_token", "id_token" or "both"')
        bearers = []
        if which in ("access_token", "both"):
            bearers.append(token.access_token)
        if which in ("id_token", "both"):
            if not token.id_token:
                raise ValueError("this DToken carries no idToken to revoke")
            bearers.append(token.id_token)
        return bearers

    def _outcome(self, response: httpx.Response, attempt: int) -> tuple[Any, float | None]:
        """``(answer, None)`` for a 200, ``(None, wait)`` to retry; raises otherwise."""
        if response.status_code == 200:
            try:
                return response.json(), None
            except ValueError:
                raise DianError("DIAN answer is not JSON", status=200) from None
        if response.status_code in (429, 503):
            wait = _retry_after(response.headers.get("retry-after"), default=2.0**attempt)
            if attempt < self.max_retries:
                return None, min(wait, self.max_backoff)
            raise DianError("DIAN asks to retry later", status=response.status_code, retry_after=wait)
        detail: Any = None
        try:
            detail = response.json()
        except ValueError:
            detail = None
        reason = "invalid credentials" if response.status_code == 401 else "request refused"
        raise DianError(f"DIAN: {reason} (HTTP {response.status_code})", status=response.status_code, detail=detail)


_UNREACHABLE = "DIAN could not be reached"

#: The largest DIAN answer read: its token answers are a few KiB.
MAX_ANSWER_BYTES = 256 * 1024


@contextlib.contextmanager
def _as_dian_errors() -> Iterator[None]:
    """httpx's failures while sending and reading, as :class:`DianError` (the cause kept)."""
    try:
        yield
    except httpx.TransportError as exc:
        raise DianError(_UNREACHABLE, status=0) from exc
    except httpx.DecodingError as exc:
        raise DianError("DIAN answer could not be decoded", status=0) from exc


def _bounded(response: httpx.Response, body: bytes) -> httpx.Response:
    """``response`` with ``body`` (read no further than :data:`MAX_ANSWER_BYTES`) as its content.

    ``body`` is already decoded: the rebuilt response drops ``Content-Encoding``
    (httpx would inflate it again) and the ``Content-Length`` of what was sent.
    """
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in _DECODED_HEADERS]
    return httpx.Response(response.status_code, headers=headers, content=body, request=response.request)


_DECODED_HEADERS = frozenset({"content-encoding", "content-length"})


def _too_large(response: httpx.Response) -> DianError:
    return DianError(f"DIAN answer larger than {MAX_ANSWER_BYTES} bytes", status=response.status_code)


class DianClient(_DianProtocol):
    """Login, refresh and revoke against the DIAN identity service.

    No secret reaches a log record: httpx's request log lines for the login
    URL (which carries the credentials, as DIAN requires) are redacted.

    Args:
        base_url: ``DIAN_PRODUCTION``, ``DIAN_TEST`` or any base (tests).
        client_id / client_secret / encryption_key: as DIAN issued them.
        tipo_documento / nro_documento / nit / password: the user's identity.
        encrypt: encrypt ``client_secret`` and ``password`` (DIAN's test
            environment allows plaintext).
        grant_parameter: the name of the grant parameter: ``"grant_type"``
            (the service's example, default) or ``"grant-type"`` (its table).
        max_retries / max_backoff: bounded retries on 429/503, honouring
            ``Retry-After`` up to ``max_backoff`` seconds.
        require_https: refuse a plain-http ``base_url`` except on loopback.
        http_client: an ``httpx.Client`` to use (a new one otherwise).

    Raises:
        ConfigurationError: an ``EncryptionKey`` that is not 16 ASCII
            characters, a plain-http ``base_url``, an unknown
            ``grant_parameter`` or a negative ``max_retries``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        client_id: str,
        client_secret: str,
        encryption_key: str,
        tipo_documento: str,
        nro_documento: str,
        nit: str,
        password: str,
        encrypt: bool = True,
        grant_parameter: str = "grant_type",
        max_retries: int = 3,
        max_backoff: float = 30.0,
        require_https: bool = True,
        http_client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if http_client is not None and not isinstance(http_client, httpx.Client):
            raise ConfigurationError("http_client must be an httpx.Client (use AsyncDianClient for httpx.AsyncClient)")
        super().__init__(
            base_url,
            client_id=client_id,
            client_secret=client_secret,
            encryption_key=encryption_key,
            tipo_documento=tipo_documento,
            nro_documento=nro_documento,
            nit=nit,
            password=password,
            encrypt=encrypt,
            grant_parameter=grant_parameter,
            max_retries=max_retries,
            max_backoff=max_backoff,
            require_https=require_https,
            clock=clock,
        )
        self._http = http_client or httpx.Client(timeout=10.0, follow_redirects=False)
        self._own_http = http_client is None
        self._sleep = sleep

    def _send(self, build: Callable[[], _Request]) -> Any:
        for attempt in range(self.max_retries + 1):
            request = build()
            _guard_logs()
            with _as_dian_errors():
                with self._http.stream(**request.stream_arguments()) as streamed:
                    response = _bounded(streamed, read_sync(streamed, MAX_ANSWER_BYTES, _too_large))
            answer, wait = self._outcome(response, attempt)
            if wait is None:
                return answer
            self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def login(self) -> DianToken:
        """Obtain a new DToken with the user's credentials.

        Raises:
            DianError: refused (``status`` 401: wrong credentials), busy after
                the retries (429/503, ``retry_after``), or unreachable
                (``status`` 0, the transport error as ``__cause__``).
        """
        return DianToken.from_answer(self._send(self._login_request), self._clock())

    def refresh(self, token: DianToken) -> DianToken:
        """Exchange ``token.refresh_token`` for a new DToken.

        Raises:
            DianError: as for :meth:`login`.
        """
        answer = self._send(lambda: self._bearer_request("refresh", token.refresh_token))
        return DianToken.from_answer(answer, self._clock())

    def revoke(self, token: DianToken, *, which: RevokeTarget = "access_token") -> None:
        """Revoke ``token.access_token``, its ``id_token`` or both; DIAN answers ``{"message": "success"}``.

        Raises:
            ValueError: ``which`` is unknown, or names an ``id_token`` the DToken lacks.
            DianError: as for :meth:`login`.
        """
        for bearer in self._revoke_bearers(token, which):
            self._send(lambda bearer=bearer: self._bearer_request("revoke", bearer))  # type: ignore[misc]

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._own_http:
            self._http.close()


class AsyncDianClient(_DianProtocol):
    """The async twin of :class:`DianClient`: the same arguments, coroutine methods.

    ``http_client`` is an ``httpx.AsyncClient`` and ``sleep`` an async callable.
    Use it (through :class:`DianAuth`) with an ``httpx.AsyncClient``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        client_id: str,
        client_secret: str,
        encryption_key: str,
        tipo_documento: str,
        nro_documento: str,
        nit: str,
        password: str,
        encrypt: bool = True,
        grant_parameter: str = "grant_type",
        max_retries: int = 3,
        max_backoff: float = 30.0,
        require_https: bool = True,
        http_client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise ConfigurationError("http_client must be an httpx.AsyncClient (use DianClient for httpx.Client)")
        super().__init__(
            base_url,
            client_id=client_id,
            client_secret=client_secret,
            encryption_key=encryption_key,
            tipo_documento=tipo_documento,
            nro_documento=nro_documento,
            nit=nit,
            password=password,
            encrypt=encrypt,
            grant_parameter=grant_parameter,
            max_retries=max_retries,
            max_backoff=max_backoff,
            require_https=require_https,
            clock=clock,
        )
        self._http = http_client or httpx.AsyncClient(timeout=10.0, follow_redirects=False)
        self._own_http = http_client is None
        self._sleep = sleep

    async def _send(self, build: Callable[[], _Request]) -> Any:
        for attempt in range(self.max_retries + 1):
            request = build()
            _guard_logs()
            with _as_dian_errors():
                async with self._http.stream(**request.stream_arguments()) as streamed:
                    response = _bounded(streamed, await read_async(streamed, MAX_ANSWER_BYTES, _too_large))
            answer, wait = self._outcome(response, attempt)
            if wait is None:
                return answer
            await self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    async def login(self) -> DianToken:
        """Async twin of :meth:`DianClient.login`."""
        return DianToken.from_answer(await self._send(self._login_request), self._clock())

    async def refresh(self, token: DianToken) -> DianToken:
        """Async twin of :meth:`DianClient.refresh`."""
        answer = await self._send(lambda: self._bearer_request("refresh", token.refresh_token))
        return DianToken.from_answer(answer, self._clock())

    async def revoke(self, token: DianToken, *, which: RevokeTarget = "access_token") -> None:
        """Async twin of :meth:`DianClient.revoke`."""
        for bearer in self._revoke_bearers(token, which):
            await self._send(lambda bearer=bearer: self._bearer_request("revoke", bearer))  # type: ignore[misc]

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._own_http:
            await self._http.aclose()


def _retry_after(value: str | None, *, default: float) -> float:
    if value is None:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            from email.utils import parsedate_to_datetime

            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return default


class DianAuth(httpx.Auth):
    """An ``httpx.Auth`` that keeps one DIAN token for this process.

    It logs in on first use, refreshes ``refresh_margin`` seconds before
    ``expireIn`` runs out (logging in afresh if the refresh fails), and
    revokes the token on :meth:`close` / :meth:`aclose`. One login at a time:
    threads (sync) or tasks (async) needing a token together share one.

    Built on a :class:`DianClient`, it serves ``httpx.Client``; built on an
    :class:`AsyncDianClient`, it serves ``httpx.AsyncClient``. The other
    combination raises ``RuntimeError`` rather than send a request without
    credentials.

    Args:
        client: the DIAN client that logs in, refreshes and revokes.
        refresh_margin: seconds before expiry at which the token is refreshed.
        use_id_token: send ``idToken`` instead of ``accessToken``.
        revoke: what :meth:`close` revokes: ``"access_token"`` (default),
            ``"id_token"`` or ``"both"``.
    """

    requires_response_body = False

    def __init__(
        self,
        client: DianClient | AsyncDianClient,
        *,
        refresh_margin: float = 60.0,
        use_id_token: bool = False,
        revoke: RevokeTarget = "access_token",
    ) -> None:
        if not isinstance(client, DianClient | AsyncDianClient):
            raise ConfigurationError("client must be a DianClient or an AsyncDianClient")
        if revoke not in ("access_token", "id_token", "both"):
            raise ConfigurationError('revoke must be "access_token", "id_token" or "both"')
        self.client = client
        self.refresh_margin = refresh_margin
        self.use_id_token = use_id_token
        self.revoke = revoke
        self._token: DianToken | None = None
        self._lock = threading.Lock()
        self._async_locks: dict[int, asyncio.Lock] = {}
        self.logins = 0

    def _usable(self) -> DianToken | None:
        token = self._token
        if token is None:
            return None
        margin = self.refresh_margin
        if token.obtained_at is not None:
            # At most half the lifetime: an expireIn under the margin would cost a refresh per request.
            margin = min(margin, max(token.expires_at - token.obtained_at, 0.0) / 2)
        return token if self.client._clock() < token.expires_at - margin else None

    def _bearer(self, token: DianToken) -> str:
        return f"Bearer {token.id_token if self.use_id_token else token.access_token}"

    # ------------------------------------------------------------ sync

    def get_token_sync(self) -> DianToken:
        """The current token, obtained or refreshed as needed (one login at a time).

        Raises:
            RuntimeError: this auth is built on an :class:`AsyncDianClient`.
            DianError: DIAN refused or could not be reached.
        """
        client = self.client
        if not isinstance(client, DianClient):
            raise RuntimeError("DianAuth built on an AsyncDianClient serves httpx.AsyncClient only; use DianClient")
        with self._lock:
            token = self._usable()
            if token is not None:
                return token
            previous = self._token
            if previous is not None and previous.refresh_token:
                try:
                    token = client.refresh(previous)
                except DianError:
                    token = self._login_sync(client)
            else:
                token = self._login_sync(client)
            self._token = token
            return token

    def _login_sync(self, client: DianClient) -> DianToken:
        self.logins += 1
        return client.login()

    def token(self) -> DianToken:
        """The current token (sync); the same as :meth:`get_token_sync`."""
        return self.get_token_sync()

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._bearer(self.get_token_sync())
        yield request

    def close(self) -> None:
        """Revoke the token (best effort) and close the client.

        Raises:
            RuntimeError: this auth is built on an :class:`AsyncDianClient` (use :meth:`aclose`).
        """
        client = self.client
        if not isinstance(client, DianClient):
            raise RuntimeError("DianAuth built on an AsyncDianClient: use aclose()")
        with self._lock:
            token, self._token = self._token, None
        if token is not None:
            try:
                client.revoke(token, which=self.revoke)
            except (DianError, ValueError, httpx.HTTPError):
                pass
        client.close()

    # ------------------------------------------------------------ async

    async def get_token(self) -> DianToken:
        """Async twin of :meth:`get_token_sync`: concurrent tasks share one login.

        Raises:
            RuntimeError: this auth is built on a (sync) :class:`DianClient`.
            DianError: DIAN refused or could not be reached.
        """
        client = self.client
        if not isinstance(client, AsyncDianClient):
            raise RuntimeError(
                "DianAuth built on a DianClient cannot serve httpx.AsyncClient: build it on an AsyncDianClient"
            )
        token = self._usable()
        if token is not None:
            return token
        lock = self._async_locks.setdefault(id(asyncio.get_running_loop()), asyncio.Lock())
        async with lock:
            token = self._usable()  # another task may have logged in meanwhile
            if token is not None:
                return token
            previous = self._token
            if previous is not None and previous.refresh_token:
                try:
                    token = await client.refresh(previous)
                except DianError:
                    self.logins += 1
                    token = await client.login()
            else:
                self.logins += 1
                token = await client.login()
            self._token = token
            return token

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = self._bearer(await self.get_token())
        yield request

    async def aclose(self) -> None:
        """Async twin of :meth:`close`: revoke the token (best effort) and close the client."""
        client = self.client
        if not isinstance(client, AsyncDianClient):
            raise RuntimeError("DianAuth built on a DianClient: use close()")
        token, self._token = self._token, None
        if token is not None:
            try:
                await client.revoke(token, which=self.revoke)
            except (DianError, ValueError, httpx.HTTPError):
                pass
        await client.aclose()
