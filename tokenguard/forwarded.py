"""The request URI and client certificate as the client saw them, behind proxies.

No I/O. A DPoP proof's ``htu`` names the URI the client addressed; behind a
TLS-terminating proxy the application sees another scheme and host. Those come
from ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` (and a client certificate from
a proxy header) only when the peer is a proxy the application trusts.

.. warning::
   It is a security issue to trust these headers from a client rather than a
   proxy: a client could then make any ``htu`` match or claim any certificate.
   List only the addresses of your own proxies.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .errors import ConfigurationError, InvalidRequest

__all__ = ["TrustedProxies", "request_url"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# RFC 9110 §7.2 / RFC 3986 §3.2.2-3.2.3: Host = uri-host [ ":" port ], where
# uri-host is an IP-literal or a reg-name (no "/", "?", "#", "@" or spaces).
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]+)(?::[0-9]{0,5})?")


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """Proxies whose forwarded headers are believed.

    Args:
        networks: addresses or CIDR networks of the proxies (``"10.0.0.0/8"``).
        client_cert_header: the header in which the proxy passes the client
            certificate (URL-encoded PEM), e.g. ``"x-ssl-client-cert"``; ``None``
            to take no certificate from headers.

    Raises:
        ConfigurationError: a bare string for ``networks`` or an unparsable address.
    """

    networks: Sequence[str] = ()
    client_cert_header: str | None = None
    _parsed: tuple[_Network, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.networks, str):
            raise ConfigurationError('networks must be a sequence, e.g. ("10.0.0.1",), not a string')
        try:
            parsed = tuple(ipaddress.ip_network(n, strict=False) for n in self.networks)
        except ValueError as exc:
            raise ConfigurationError(f"networks: {exc}") from None
        object.__setattr__(self, "networks", tuple(self.networks))
        object.__setattr__(self, "_parsed", parsed)
        if self.client_cert_header is not None:
            object.__setattr__(self, "client_cert_header", self.client_cert_header.lower())

    def trusts(self, peer: str | None) -> bool:
        """Whether ``peer`` (an IP address) is one of the trusted proxies."""
        if peer is None or not self._parsed:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self._parsed)


def _last(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    # The nearest (trusted) proxy appends last: take the right-most value.
    found = None
    for key, value in headers:
        if key.lower() == name:
            found = value
    if found is None:
        return None
    return found.split(",")[-1].strip() or None


def request_url(
    scheme: str,
    host: str,
    path: str,
    headers: Iterable[tuple[str, str]],
    peer: str | None,
    proxies: TrustedProxies | None,
) -> str:
    """The absolute URI the client addressed (without the query).

    ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` replace ``scheme`` and
    ``host`` only when ``peer`` is a trusted proxy.

    Raises:
        InvalidRequest: the host is not ``host[:port]`` (RFC 9110 §7.2).
    """
    headers = list(headers)
    if proxies is not None and proxies.trusts(peer):
        proto = _last(headers, "x-forwarded-proto")
        if proto in ("http", "https"):
            scheme = proto
        forwarded_host = _last(headers, "x-forwarded-host")
        if forwarded_host:
            host = forwarded_host
    if len(host) > 255 or not _HOST.fullmatch(host):
        # A Host carrying a path, query or fragment would steer the URI a DPoP
        # htu is compared with (RFC 9449 §4.3 check 9); RFC 9112 §3.2: 400.
        raise InvalidRequest("malformed Host header")
    return f"{scheme}://{host}{path}"


def proxy_certificate(
    headers: Iterable[tuple[str, str]], peer: str | None, proxies: TrustedProxies | None
) -> str | None:
    """The raw client-certificate header value, only from a trusted proxy."""
    if proxies is None or proxies.client_cert_header is None or not proxies.trusts(peer):
        return None
    values = [v for k, v in headers if k.lower() == proxies.client_cert_header]
    return values[0] if len(values) == 1 else None
