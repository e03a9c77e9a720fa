"""Configured URLs that carry credentials, kept out of httpx's request log lines.

httpx logs every request at INFO as ``HTTP Request: POST <url> "HTTP/1.1 200 OK"``
with the URL as it is: a ``user:password@`` authority or a secret in the query
of a configured endpoint (some token services take their credentials there)
would reach the application's logs whenever it shows httpx's INFO records.
tokenguard's own records already use :func:`~tokenguard._logtext.public_url`;
this filter, on the ``httpx`` logger, rewrites httpx's.

Only URLs tokenguard was configured with (or discovered) and that carry a
userinfo or a query are registered, so other requests the application makes
with httpx are logged untouched. The registry is bounded.
"""

from __future__ import annotations

import logging
import threading

import httpx

from ._logtext import public_url

__all__ = ["keep_out_of_logs"]

#: Distinct URLs registered at most; more are a misuse (URLs built per request), not configuration.
MAX_REGISTERED = 512


def _key(url: str) -> str:
    """The URL as httpx prints a request's, without its query: lower-case scheme and host, no default port."""
    base = url.split("?", 1)[0].split("#", 1)[0]
    scheme, separator, rest = base.partition("://")
    if not separator:
        return base
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    scheme = scheme.lower()
    host = host.lower()
    default = {"http": ":80", "https": ":443"}.get(scheme)
    if default is not None and host.endswith(default):
        host = host[: -len(default)]
    return f"{scheme}://{userinfo}{at}{host}{slash}{path or ''}"


class _Redactor(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self._keys: set[str] = set()
        self._lock = threading.Lock()

    def register(self, url: str) -> bool:
        keys = {_key(url)}
        try:
            # httpx logs the URL as it normalised it (percent-encoding of the
            # userinfo and path, IDNA host, dot segments, empty port): that form too.
            keys.add(_key(str(httpx.URL(url))))
        except (httpx.InvalidURL, TypeError, ValueError):
            pass
        with self._lock:
            if len(self._keys) >= MAX_REGISTERED:
                return False
            self._keys |= keys
            return True

    def _redacted(self, value: object) -> object:
        if not isinstance(value, httpx.URL | str):
            return value
        text = str(value)
        if "://" not in text or _key(text) not in self._keys:
            return value
        return public_url(text)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(self._redacted(arg) for arg in record.args)
        return True


_REDACTOR = _Redactor()
_installed = False


def keep_out_of_logs(url: str) -> None:
    """Register ``url`` (when it carries a userinfo or a query) so httpx logs it as :func:`public_url` shows it."""
    global _installed
    scheme, separator, rest = url.partition("://")
    if not separator or ("?" not in rest and "@" not in rest.split("/", 1)[0]):
        return
    if _REDACTOR.register(url) and not _installed:
        logging.getLogger("httpx").addFilter(_REDACTOR)
        _installed = True
