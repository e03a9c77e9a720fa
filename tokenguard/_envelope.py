"""Authenticated envelopes for values in a shared store: bound to their key name, format and age.

Rule: every value a guard writes to a shared store is sealed here, and every
value it reads is opened here; nothing else touches stored bytes.

Threat model (docs/security.md): someone who can write to Redis but holds
neither the hash key nor the encryption key. Without this envelope such a
writer could copy a victim's entry onto the key of a made-up token, or plant
yesterday's JWKS back. So each value carries

* the **format version** and **its own key name** (prefix included) as
  associated data: an entry copied to another key no longer authenticates;
* its **creation time** and **lifetime**, inside the authenticated part: the
  reader refuses an entry past its lifetime whatever TTL Redis reports, so a
  replayed copy is a miss, never a fresh entry.

With encryption keys the envelope is AES-256-GCM (``cryptography``'s AEAD,
NIST SP 800-38D) with a random 96-bit nonce; without them it is HMAC-SHA256
over the same associated data and the plain value. Either way a writer
without our keys can cause misses (and so upstream calls), never an
acceptance. No I/O, no clock reads: callers pass ``now``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import struct
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import ConfigurationError

__all__ = ["Envelope", "aead_keys_of"]

#: Format version 2 (version 1 was unauthenticated JSON or Fernet without
#: associated data); bumped whenever the layout changes, so an old reader
#: never misreads a new entry. The mode byte tells AEAD from MAC entries.
_AEAD = b"TG2A"
_MAC = b"TG2M"
_TIMES = struct.Struct(">dd")  # created, lifetime (seconds)
_NONCE_BYTES = 12
_KEY_ID_BYTES = 4
_TAG_BYTES = 32
#: Tolerated clock difference between the writer and the reader (hosts share
#: a store, not a clock). An entry "created" further in the future is refused:
#: it would otherwise outlive its lifetime by that much.
MAX_CLOCK_SKEW = 30.0


def aead_keys_of(keys: str | bytes | Sequence[str | bytes] | None) -> tuple[bytes, ...]:
    """Configured encryption keys (URL-safe base64 of 32 random bytes, the
    ``Fernet.generate_key()`` format) as raw AES-256 keys, newest first.

    Raises:
        ConfigurationError: a key is not 32 bytes of URL-safe base64, or none is given.
    """
    if keys is None:
        return ()
    given = [keys] if isinstance(keys, str | bytes) else list(keys)
    if not given:
        raise ConfigurationError("encryption_key is empty")
    raw: list[bytes] = []
    for key in given:
        try:
            decoded = base64.urlsafe_b64decode(key.encode("ascii") if isinstance(key, str) else key)
        except (ValueError, TypeError):
            decoded = b""
        if len(decoded) != 32:
            raise ConfigurationError(
                "encryption_key must be 32 random bytes in URL-safe base64 (e.g. Fernet.generate_key())"
            )
        # A dedicated key for this use: the configured secret may also serve elsewhere.
        raw.append(hmac.digest(decoded, b"tokenguard shared-store AES-256-GCM v2", "sha256"))
    return tuple(raw)


class Envelope:
    """Seals and opens shared-store values (AEAD with ``aead_keys``, else HMAC with ``mac_key``).

    Args:
        aead_keys: raw 32-byte AES keys, newest first: the first seals, any opens
            (key rotation). When given, MAC-only entries are refused (no downgrade).
        mac_key: the HMAC key used when there is no encryption key.
    """

    __slots__ = ("_aead", "_ids", "_mac_key")

    def __init__(self, *, aead_keys: Sequence[bytes] = (), mac_key: bytes) -> None:
        self._aead = [(hashlib.sha256(key).digest()[:_KEY_ID_BYTES], AESGCM(key)) for key in aead_keys]
        self._ids = {key_id: cipher for key_id, cipher in self._aead}
        self._mac_key = mac_key

    def __repr__(self) -> str:
        return f"Envelope(encrypted={bool(self._aead)}, keys=[secret])"

    @property
    def encrypted(self) -> bool:
        """Whether values are encrypted (not only authenticated)."""
        return bool(self._aead)

    @staticmethod
    def _associated(mode: bytes, name: str) -> bytes:
        encoded = name.encode("utf-8", "surrogateescape")
        # Length-prefixed, so no (name, value) pair can be re-split into another.
        return mode + len(encoded).to_bytes(4, "big") + encoded

    def seal(self, name: str, value: bytes, now: float, lifetime: float) -> bytes:
        """``value`` authenticated with ``name``, created ``now``, good for ``lifetime`` seconds."""
        inner = _TIMES.pack(now, lifetime) + value
        if self._aead:
            key_id, cipher = self._aead[0]
            nonce = os.urandom(_NONCE_BYTES)
            return _AEAD + key_id + nonce + cipher.encrypt(nonce, inner, self._associated(_AEAD, name))
        tag = hmac.digest(self._mac_key, self._associated(_MAC, name) + inner, "sha256")
        return _MAC + tag + inner

    def open(self, name: str, data: bytes, now: float) -> bytes | None:
        """The reverse of :meth:`seal`: the value, or ``None`` when ``data`` is not a
        current entry sealed by us for ``name`` (forged, moved, replayed past its
        lifetime, or from another format)."""
        mode = data[:4]
        if mode == _AEAD and self._aead:
            start = 4 + _KEY_ID_BYTES
            cipher = self._ids.get(data[4:start])
            if cipher is None:
                return None
            try:
                nonce, sealed = data[start : start + _NONCE_BYTES], data[start + _NONCE_BYTES :]
                inner = cipher.decrypt(nonce, sealed, self._associated(_AEAD, name))
            except (InvalidTag, ValueError):
                return None
        elif mode == _MAC and not self._aead:
            tag, inner = data[4 : 4 + _TAG_BYTES], data[4 + _TAG_BYTES :]
            expected = hmac.digest(self._mac_key, self._associated(_MAC, name) + inner, "sha256")
            if not hmac.compare_digest(tag, expected):
                return None
        else:
            return None
        if len(inner) < _TIMES.size:
            return None
        created, lifetime = _TIMES.unpack_from(inner)
        if not (math.isfinite(created) and math.isfinite(lifetime)) or lifetime <= 0:
            return None
        # The reader enforces the lifetime itself: a value planted back after
        # it ended is a miss, whatever expiry the store reports.
        if created > now + MAX_CLOCK_SKEW or now >= created + lifetime:
            return None
        return inner[_TIMES.size :]
