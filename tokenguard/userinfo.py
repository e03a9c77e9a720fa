"""OIDC UserInfo (OpenID Connect Core §5.3): the flow that asks, and interpreting the answer.

No I/O (the flow yields its request; the runners perform it), no framework
imports, no clock reads.

The request is a GET with the access token as Bearer credentials, to the
``userinfo_endpoint`` of the *configured* issuer that verified the token.
OIDC Core §5.3.4: the answer's ``sub`` must equal the token's ``sub``,
otherwise the answer must not be used (token substitution).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from ._effects import GuardFlow, HttpReply, HttpRequest, json_object
from .cache import CacheBackend, CachedResult, TokenHasher
from .claims import TokenClaims
from .errors import ConfigurationError, InvalidToken, ServiceUnavailable
from .sources import MetadataSource

__all__ = ["UserinfoLookup", "interpret_userinfo"]


class UserinfoLookup:
    """The UserInfo answers of one guard: where to ask, and the answers kept.

    Answers are cached under a hash of the token's keyed hash, a key space no
    token's verdict reaches, for
    ``ttl`` seconds, never past the token's ``exp``.

    Args:
        metadata: the configured issuers' metadata sources, by issuer.
        introspection_metadata: the introspection issuer's, for opaque tokens.
        cache: the guard's in-process cache.
        hasher: the guard's token hasher.
        ttl: how long an answer is reused.
    """

    __slots__ = ("cache", "hasher", "introspection_metadata", "metadata", "ttl")

    def __init__(
        self,
        metadata: Mapping[str, MetadataSource],
        introspection_metadata: MetadataSource | None,
        cache: CacheBackend,
        hasher: TokenHasher,
        ttl: float,
    ) -> None:
        self.metadata = metadata
        self.introspection_metadata = introspection_metadata
        self.cache = cache
        self.hasher = hasher
        self.ttl = ttl

    def lookup(self, token: str, claims: TokenClaims, now: float) -> TokenClaims | GuardFlow[TokenClaims]:
        """The answer kept for ``token`` (whose verified claims are ``claims``), else the :meth:`flow` that asks."""
        # Its own key space: a hash of the token's verdict key, which no token
        # hashes to. (A prefixed token would not do: verify("\0userinfo\0" + T)
        # would then find T's UserInfo answer and take it for a verdict.)
        cache_key = hashlib.sha256(b"tokenguard userinfo v2\0" + self.hasher.cache_key(token)).digest()
        entry = self.cache.get(cache_key)
        if entry is not None and now < entry.cache_until and entry.claims is not None:
            return entry.claims
        return self.flow(token, claims, cache_key, now)

    def flow(self, token: str, claims: TokenClaims, cache_key: bytes, now: float) -> GuardFlow[TokenClaims]:
        """Ask the token's issuer's ``userinfo_endpoint`` and keep the answer.

        Raises:
            InvalidToken: the endpoint refused the token, or answered for another subject.
            ServiceUnavailable: the endpoint failed.
            ConfigurationError: no metadata (hence no endpoint) for this token's issuer.
        """
        metadata = self.metadata.get(claims.issuer or "")
        if metadata is None and claims.token_type == "opaque":
            metadata = self.introspection_metadata
        if metadata is None:
            raise ConfigurationError("no issuer metadata for this token: userinfo is unavailable")
        endpoint = yield from metadata.endpoint_flow("userinfo_endpoint", now)
        if endpoint is None:
            raise ConfigurationError("the issuer's metadata has no userinfo_endpoint")
        reply = yield HttpRequest(
            "GET",
            endpoint,
            headers=(("Authorization", f"Bearer {token}"),),
            coalesce_key="GET userinfo " + cache_key.hex(),
            purpose="userinfo",
        )
        info = interpret_userinfo(reply, claims)
        cache_until = now + self.ttl
        if claims.exp is not None:
            cache_until = min(cache_until, claims.exp)
        self.cache.set(cache_key, CachedResult(info, cache_until))
        return info


def interpret_userinfo(reply: HttpReply, token_claims: TokenClaims) -> TokenClaims:
    """Turn a UserInfo reply into claims about the token's subject.

    Raises:
        InvalidToken: the endpoint refused the token (401/403), or answered
            for another subject.
        ServiceUnavailable: any other failure, or a signed (``application/jwt``)
            answer, which is not supported.
    """
    if reply.status in (401, 403):
        raise InvalidToken("userinfo refused the token")
    if reply.status != 200:
        raise ServiceUnavailable(f"userinfo answered HTTP {reply.status}")
    content_type = reply.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/jwt":
        raise ServiceUnavailable("signed userinfo answers are not supported")
    document = json_object(reply, "userinfo")
    if token_claims.subject is not None and document.get("sub") != token_claims.subject:
        raise InvalidToken("userinfo answered for another subject")
    return TokenClaims(document, token_type=token_claims.token_type)
