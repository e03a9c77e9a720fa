"""Rotating DPoP server nonces (RFC 9449 §8-9), stateless.

A nonce is ``base64url(window || HMAC-SHA256(secret, window)[:16])`` where
``window`` is the current rotation period. The current and the previous
window are accepted, so a nonce lives between one and two periods; no state
is kept, and every worker given the same secret accepts every other's nonces.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct

from .errors import ConfigurationError

__all__ = ["DEFAULT_NONCE_LIFETIME", "DPoPNonces"]

#: Rotation period in seconds. RFC 9449 §8 leaves it open; oidc-provider
#: rotates its DPoP nonces every 60 s and accepts the previous one too.
DEFAULT_NONCE_LIFETIME = 60.0
_MAC_BYTES = 16


class DPoPNonces:
    """Issues and checks server nonces.

    Args:
        secret: HMAC key, at least 32 bytes; share it between workers. A random
            per-process key when ``None`` (single worker only).
        lifetime: seconds per rotation window.

    Raises:
        ConfigurationError: a short secret or non-positive lifetime.
    """

    def __init__(self, secret: bytes | None = None, *, lifetime: float = DEFAULT_NONCE_LIFETIME) -> None:
        if secret is None:
            secret = os.urandom(32)
        if not isinstance(secret, bytes) or len(secret) < 32:
            raise ConfigurationError("secret must be at least 32 bytes")
        if not lifetime > 0:
            raise ConfigurationError("lifetime must be positive")
        self._secret = secret
        self.lifetime = float(lifetime)

    def __repr__(self) -> str:
        return f"DPoPNonces(secret='**********', lifetime={self.lifetime!r})"

    def _for_window(self, window: int) -> str:
        packed = struct.pack(">q", window)
        mac = hmac.new(self._secret, packed, hashlib.sha256).digest()[:_MAC_BYTES]
        return base64.urlsafe_b64encode(packed + mac).rstrip(b"=").decode("ascii")

    def current(self, now: float) -> str:
        """The nonce to send now in ``DPoP-Nonce``."""
        return self._for_window(int(now // self.lifetime))

    def is_valid(self, nonce: str, now: float) -> bool:
        """Whether ``nonce`` was issued in this window or the previous one."""
        window = int(now // self.lifetime)
        candidate = nonce.encode("ascii", "replace")
        return any(hmac.compare_digest(candidate, self._for_window(w).encode("ascii")) for w in (window, window - 1))
