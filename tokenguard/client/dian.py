"""The DIAN identity service (Colombia): login, refresh, revoke, and an ``httpx.Auth``.

DIAN's token service is not OAuth-standard:

* ``POST {base}/identidad/sts/v1/tokens/login`` with an empty body and query
  parameters ``grant_type=password``, ``client_id``, ``client_secret``
  (encrypted), ``tipoDocumento``, ``nroDocumento``, ``nit``, ``password``
  (encrypted);
* ``POST .../tokens/refresh`` and ``.../tokens/revoke`` with
  ``Authorization: Bearer <token>`` and ``ClientId`` headers;
* answers are a camelCase ``DToken``; any status but 200 is an error, 429
  and 503 mean retry later.

Field encryption: plaintext ``[<value>]-[<timestamp>]``, the timestamp being
Colombian time (UTC-05:00) as ``YYYY-MM-DDTHH:MM:SS``; AES-128-CBC with the
16-character ``EncryptionKey`` DIAN issued, a zero IV and PKCS#7 padding;
standard base64. DIAN refuses timestamps more than 3 minutes off, so every
request is encrypted at send time.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..errors import ConfigurationError

__all__ = [
    "DIAN_PRODUCTION",
    "DIAN_TEST",
    "DianAuth",
    "DianClient",
    "DianError",
    "DianToken",
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

    @classmethod
    def from_answer(cls, document: Any, now: float) -> DianToken:
        """Read a DToken answer; ``clientId`` may arrive padded with spaces."""
        if not isinstance(document, dict):
            raise DianError("DIAN answer is not a JSON object", status=200)
        try:
            expire_in = float(document["expireIn"])
            return cls(
                access_token=str(document["accessToken"]),
                id_token=str(document.get("idToken") or ""),
                refresh_token=str(document.get("refreshToken") or ""),
                token_type=str(document.get("tokenType") or "Bearer"),
                expires_at=now + expire_in,
                client_id=str(document.get("clientId") or "").strip(),
            )
        except (KeyError, TypeError, ValueError):
            raise DianError("DIAN answer is not a DToken", status=200) from None


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    url: str
    params: dict[str, str] | None
    headers: dict[str, str]


class DianClient:
    """Login, refresh and revoke against the DIAN identity service.

    Args:
        base_url: ``DIAN_PRODUCTION``, ``DIAN_TEST`` or any base (tests).
        client_id / client_secret / encryption_key: as DIAN issued them.
        tipo_documento / nro_documento / nit / password: the user's identity.
        encrypt: encrypt ``client_secret`` and ``password`` (DIAN's test
            environment allows plaintext).
        max_retries / max_backoff: bounded retries on 429/503, honouring
            ``Retry-After`` up to ``max_backoff`` seconds.
        http_client: an ``httpx.Client`` to use (a new one otherwise).
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
        max_retries: int = 3,
        max_backoff: float = 30.0,
        http_client: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if encrypt:
            _key(encryption_key)
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self._secret = client_secret
        self._encryption_key = encryption_key
        self._identity = {"tipoDocumento": tipo_documento, "nroDocumento": nro_documento, "nit": nit}
        self._password = password
        self.encrypt = encrypt
        self.max_retries = max_retries
        self.max_backoff = max_backoff
        self._http = http_client or httpx.Client(timeout=10.0, follow_redirects=False)
        self._own_http = http_client is None
        self._clock = clock
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"DianClient(base_url={self.base_url!r}, client_id={self.client_id!r})"

    def _protect(self, value: str) -> str:
        return encrypt_field(value, self._encryption_key, self._clock()) if self.encrypt else value

    def _login_request(self) -> _Request:
        # Encrypted now, at send time: DIAN refuses timestamps 3 minutes off.
        params = {
            "grant_type": "password",
            "client_id": self.client_id,
            "client_secret": self._protect(self._secret),
            **self._identity,
            "password": self._protect(self._password),
        }
        return _Request("POST", f"{self.base_url}{_PATH}/login", params, {})

    def _send(self, build: Callable[[], _Request]) -> Any:
        for attempt in range(self.max_retries + 1):
            request = build()
            response = self._http.request(
                request.method, request.url, params=request.params, headers=request.headers, content=b""
            )
            if response.status_code == 200:
                try:
                    return response.json()
                except ValueError:
                    raise DianError("DIAN answer is not JSON", status=200) from None
            if response.status_code in (429, 503):
                wait = _retry_after(response.headers.get("retry-after"), default=2.0**attempt)
                if attempt < self.max_retries:
                    self._sleep(min(wait, self.max_backoff))
                    continue
                raise DianError("DIAN asks to retry later", status=response.status_code, retry_after=wait)
            detail: Any = None
            try:
                detail = response.json()
            except ValueError:
                detail = None
            reason = "invalid credentials" if response.status_code == 401 else "request refused"
            raise DianError(f"DIAN: {reason} (HTTP {response.status_code})", status=response.status_code, detail=detail)
        raise AssertionError("unreachable")  # pragma: no cover

    def login(self) -> DianToken:
        """Obtain a new DToken with the user's credentials."""
        return DianToken.from_answer(self._send(self._login_request), self._clock())

    def refresh(self, token: DianToken) -> DianToken:
        """Exchange ``token.refresh_token`` for a new DToken."""
        headers = {"Authorization": f"Bearer {token.refresh_token}", "ClientId": self.client_id}
        answer = self._send(lambda: _Request("POST", f"{self.base_url}{_PATH}/refresh", None, headers))
        return DianToken.from_answer(answer, self._clock())

    def revoke(self, token: DianToken) -> None:
        """Revoke ``token.access_token``; DIAN answers ``{"message": "success"}``."""
        headers = {"Authorization": f"Bearer {token.access_token}", "ClientId": self.client_id}
        self._send(lambda: _Request("POST", f"{self.base_url}{_PATH}/revoke", None, headers))

    def close(self) -> None:
        if self._own_http:
            self._http.close()


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
    revokes the token on :meth:`close`. Thread-safe; one login at a time.
    Sending ``idToken`` instead of ``accessToken``: set ``use_id_token=True``.
    """

    requires_response_body = False

    def __init__(self, client: DianClient, *, refresh_margin: float = 60.0, use_id_token: bool = False) -> None:
        self.client = client
        self.refresh_margin = refresh_margin
        self.use_id_token = use_id_token
        self._token: DianToken | None = None
        self._lock = threading.Lock()

    def token(self) -> DianToken:
        """The current token, obtained or refreshed as needed."""
        with self._lock:
            token = self._token
            now = self.client._clock()
            if token is not None and now < token.expires_at - self.refresh_margin:
                return token
            if token is not None and token.refresh_token:
                try:
                    token = self.client.refresh(token)
                except DianError:
                    token = self.client.login()
            else:
                token = self.client.login()
            self._token = token
            return token

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.token()
        request.headers["Authorization"] = f"Bearer {token.id_token if self.use_id_token else token.access_token}"
        yield request

    def close(self) -> None:
        """Revoke the token (best effort) and close the client."""
        with self._lock:
            token, self._token = self._token, None
        if token is not None:
            try:
                self.client.revoke(token)
            except (DianError, httpx.HTTPError):
                pass
        self.client.close()
