"""Headers on responses to authenticated requests.

No I/O, no framework imports, no clock reads. Adapters hand over the
response's header list and get back the list to send.

An authenticated response is personal: a shared cache must never serve it to
someone else (RFC 9111 §3.5 lets shared caches store responses to requests
with ``Authorization`` when they are marked ``public``). So:

* ``Vary: Authorization`` is merged into any existing ``Vary``;
* no ``Cache-Control`` → ``Cache-Control: no-store``;
* ``public`` → by default rewritten to ``private`` (policy ``"private"``),
  kept (``"keep"``), or replaced by ``no-store`` (``"no-store"``).

Most responses carry neither ``Vary`` nor ``Cache-Control``; then the two
fields are appended as precomputed values and no other header is touched
(:meth:`ResponsePolicy.quick`, and :meth:`ResponsePolicy.secure_raw` on the
ASGI adapter's raw byte pairs, which decodes only the two fields it merges).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Literal

from ._logtext import loggable
from .cachecontrol import CacheControl

__all__ = ["MAX_WARNED_PATHS", "PublicCachePolicy", "ResponsePolicy", "has_merged_fields", "secure_headers"]

logger = logging.getLogger("tokenguard.response")

PublicCachePolicy = Literal["private", "keep", "no-store"]

# What a response without Vary or Cache-Control gets, precomputed: the same
# pairs secure_headers() appends in that case.
_VARY_AUTHORIZATION = ("Vary", "Authorization")
_NO_STORE = ("Cache-Control", "no-store")
# The same as ASGI raw pairs (ASGI wants lowercase names).
_RAW_VARY_AUTHORIZATION = (b"vary", b"Authorization")
_RAW_NO_STORE = (b"cache-control", b"no-store")
# Lengths of "vary" and "cache-control": names of other lengths are skipped without lowercasing.
_MERGED_NAME_LENGTHS = (4, 13)


def _merge_vary(values: Sequence[str]) -> str:
    tokens: list[str] = []
    for value in values:
        for token in value.split(","):
            token = token.strip()
            if token and token.lower() not in {t.lower() for t in tokens}:
                tokens.append(token)
    if "*" in tokens:
        return "*"
    if "authorization" not in {t.lower() for t in tokens}:
        tokens.append("Authorization")
    return ", ".join(tokens)


def secure_headers(
    headers: Sequence[tuple[str, str]],
    *,
    public_policy: PublicCachePolicy = "private",
) -> tuple[list[tuple[str, str]], bool]:
    """Apply the authenticated-response rules to ``headers``.

    Returns the new header list and whether the route marked the response as
    storable by shared caches (so the adapter can log it once per route).
    """
    out: list[tuple[str, str]] = []
    vary: list[str] = []
    cache_control: list[str] = []
    for name, value in headers:
        lower = name.lower()
        if lower == "vary":
            vary.append(value)
        elif lower == "cache-control":
            cache_control.append(value)
        else:
            out.append((name, value))
    out.append(("Vary", _merge_vary(vary)))
    if not cache_control:
        out.append(("Cache-Control", "no-store"))
        return out, False
    directives = CacheControl.from_header(", ".join(cache_control))
    # RFC 9111 §3.5: a shared cache may store a response to an authorized
    # request only with public, s-maxage or must-revalidate.
    shareable = not (directives.private or directives.no_store) and (
        directives.public or directives.s_maxage is not None or "must-revalidate" in directives.other
    )
    if not shareable or public_policy == "keep":
        out.append(("Cache-Control", ", ".join(cache_control)))
        return out, shareable
    if public_policy == "private":
        directives = CacheControl(
            max_age=directives.max_age,
            no_cache=directives.no_cache,
            private=True,
            other=directives.other,
        )
    else:
        directives = CacheControl(no_store=True)
    out.append(("Cache-Control", directives.to_header()))
    return out, True


#: Paths warned about, at most. Paths come from requests, so both the memory
#: and the log lines they cause are bounded: past this many distinct paths,
#: one last WARNING says so and no more are logged.
MAX_WARNED_PATHS = 256


def has_merged_fields(headers: Iterable[tuple[str, str]]) -> bool:
    """Whether ``headers`` hold a ``Vary`` or ``Cache-Control`` field (names compared case-insensitively).

    Without either, securing a response only appends the two precomputed
    fields (see :meth:`ResponsePolicy.quick`).
    """
    for name, _ in headers:
        if len(name) in _MERGED_NAME_LENGTHS and name.lower() in ("vary", "cache-control"):
            return True
    return False


class ResponsePolicy:
    """The headers of authenticated responses, decided the same way by every
    adapter, with one warning per path for routes that mark them shareable.

    Memory is bounded (:data:`MAX_WARNED_PATHS`) and the path reaches the log
    only escaped and truncated: it is chosen by whoever sends the request.

    Args:
        public_cache_policy: see :func:`secure_headers`.
    """

    def __init__(self, *, public_cache_policy: PublicCachePolicy = "private") -> None:
        self.public_cache_policy = public_cache_policy
        self._warned: set[str] = set()

    def secure(self, headers: Sequence[tuple[str, str]], path: str) -> list[tuple[str, str]]:
        """Apply :func:`secure_headers`, logging once per path a route that marked its response shareable."""
        quick = self.quick(headers)
        if quick is not None:
            return quick
        secured, shareable = secure_headers(headers, public_policy=self.public_cache_policy)
        if shareable:
            self._warn(path)
        return secured

    @staticmethod
    def quick(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]] | None:
        """The secured headers when ``headers`` hold neither ``Vary`` nor ``Cache-Control``, else ``None``.

        Why: that is the common case, and then :func:`secure_headers` only
        appends ``Vary: Authorization`` and ``Cache-Control: no-store`` (and
        nothing is shareable, so nothing is logged); this does it without
        parsing anything. ``None``: call :meth:`secure`, which merges.

        Args:
            headers: the response's ``(name, value)`` pairs.

        Returns:
            The headers followed by the two fields, or ``None``.
        """
        out = list(headers)
        if has_merged_fields(out):
            return None
        out.append(_VARY_AUTHORIZATION)
        out.append(_NO_STORE)
        return out

    def secure_raw(self, headers: Iterable[Sequence[bytes]], path: str) -> list[Sequence[bytes]]:
        """:meth:`secure` on ASGI raw ``[name, value]`` byte pairs.

        Why: decoding and re-encoding every header of every response costs
        more than the rest of the work. Here only ``Vary`` and
        ``Cache-Control`` are decoded (latin-1, as ASGI carries them), merged
        by :func:`secure_headers`, and appended after the other headers,
        which are passed on as they came. Names written are lowercase
        (ASGI: "header names must be lowercased").

        Args:
            headers: the ``headers`` of an ``http.response.start`` message.
            path: the request path, for the once-per-path warning.

        Returns:
            The new header list.
        """
        out: list[Sequence[bytes]] = []
        merged: list[tuple[str, str]] | None = None
        for pair in headers:
            name = pair[0]
            if len(name) in _MERGED_NAME_LENGTHS:
                lower = name.lower()
                if lower == b"vary" or lower == b"cache-control":
                    if merged is None:
                        merged = []
                    merged.append((lower.decode("latin-1"), bytes(pair[1]).decode("latin-1")))
                    continue
            out.append(pair)
        if merged is None:
            out.append(_RAW_VARY_AUTHORIZATION)
            out.append(_RAW_NO_STORE)
            return out
        secured, shareable = secure_headers(merged, public_policy=self.public_cache_policy)
        if shareable:
            self._warn(path)
        out.extend((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in secured)
        return out

    def _warn(self, path: str) -> None:
        """Log, once per path and for at most :data:`MAX_WARNED_PATHS` paths, a shareable response."""
        if len(self._warned) >= MAX_WARNED_PATHS or path[:_MAX_REMEMBERED_PATH] in self._warned:
            return
        self._warned.add(path[:_MAX_REMEMBERED_PATH])
        if len(self._warned) == MAX_WARNED_PATHS:
            logger.warning(
                "authenticated responses on %d paths were marked storable by shared caches; "
                "further paths are not logged",
                MAX_WARNED_PATHS,
            )
            return
        logger.warning(
            "authenticated response on %s was marked storable by shared caches; applied policy %r",
            loggable(path),
            self.public_cache_policy,
        )


# Longer paths are remembered by their start: a flood of long paths costs at
# most MAX_WARNED_PATHS * this many characters.
_MAX_REMEMBERED_PATH = 256
