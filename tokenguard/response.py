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
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

from ._logtext import loggable
from .cachecontrol import CacheControl

__all__ = ["MAX_WARNED_PATHS", "PublicCachePolicy", "ResponsePolicy", "secure_headers"]

logger = logging.getLogger("tokenguard.response")

PublicCachePolicy = Literal["private", "keep", "no-store"]


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
        secured, shareable = secure_headers(headers, public_policy=self.public_cache_policy)
        if shareable and len(self._warned) < MAX_WARNED_PATHS and path[:_MAX_REMEMBERED_PATH] not in self._warned:
            self._warned.add(path[:_MAX_REMEMBERED_PATH])
            if len(self._warned) == MAX_WARNED_PATHS:
                logger.warning(
                    "authenticated responses on %d paths were marked storable by shared caches; "
                    "further paths are not logged",
                    MAX_WARNED_PATHS,
                )
                return secured
            logger.warning(
                "authenticated response on %s was marked storable by shared caches; applied policy %r",
                loggable(path),
                self.public_cache_policy,
            )
        return secured


# Longer paths are remembered by their start: a flood of long paths costs at
# most MAX_WARNED_PATHS * this many characters.
_MAX_REMEMBERED_PATH = 256
