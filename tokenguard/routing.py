"""Which method verifies a token, and the flow that does it.

* A token of JWS shape whose unverified ``iss`` names a configured issuer is
  verified locally with that issuer's keys (and, with ``check_revocation``,
  introspected too). With its keys at hand and nothing to ask upstream, no
  flow is driven at all (:meth:`Router.verify_at_hand`).
* Any other token goes to the custom verifier, if any, then to introspection
  when it is configured (a JWT naming an issuer other than the introspection
  server's own is refused without a network call); otherwise it is
  ``invalid_token``. URLs are never taken from tokens.
* With a shared store, each method first looks for another process's *fact*
  (``facts.py``) and re-applies this guard's policy to it.

Every outcome is kept in the result store (``store.py``) as an entry built by
``results.py``. The flow yields effects and performs nothing (``_runner.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from . import diagnostics
from ._effects import CallVerifier, GuardFlow
from .cache import CacheBackend, CachedResult
from .claims import TokenClaims, check_not_sender_constrained
from .errors import InvalidToken
from .facts import custom_fact, jwt_fact, read_custom_fact, read_jwt_fact
from .introspection_route import IntrospectionRoute
from .issuer import IssuerRuntime
from .jwt import UnverifiedJWS, has_lone_surrogate, looks_like_jws, parse_jws, peek_issuer
from .results import custom_entry, introspection_entry, jwt_entry, serves
from .store import ResultStore

__all__ = ["CustomVerifier", "Router", "jwt_scope"]

#: A user-supplied verifier for tokens no standard method covers: returns the
#: token's claims, ``None`` when the token is not one it knows, or raises
#: :class:`~tokenguard.InvalidToken`. May be sync or async (async ones serve
#: only ``verify()``).
CustomVerifier = Callable[[str], "Mapping[str, Any] | None | Awaitable[Mapping[str, Any] | None]"]


def jwt_scope(runtime: IssuerRuntime) -> str:
    """Who establishes a JWT signature fact: the issuer and where its keys come from."""
    config = runtime.config
    static = ",".join(sorted(runtime.current_thumbprints))
    return "\0".join(("jwt", config.issuer, config.jwks_uri or "", config.discovery_url or "", static))


class Router:
    """Routes a token to the method that verifies it and keeps the outcome.

    Args:
        issuers: the runtimes of the configured JWT issuers, by issuer.
        introspection: how opaque tokens are introspected, if at all.
        verifier: the custom verifier, if any, and how long its answers are kept.
        store: the guard's result store.
        events: the guard's event counters.
        proof_of_possession: whether sender-constrained tokens pass as Bearer.
    """

    def __init__(
        self,
        *,
        issuers: Mapping[str, IssuerRuntime],
        introspection: IntrospectionRoute | None,
        verifier: CustomVerifier | None,
        verifier_cache_ttl: float,
        verifier_scope: str,
        store: ResultStore,
        events: Any,
        proof_of_possession: bool,
    ) -> None:
        self.issuers = issuers
        self.introspection = introspection
        self.verifier = verifier
        self.verifier_cache_ttl = verifier_cache_ttl
        #: The scope under which the custom verifier's facts are keyed.
        self.verifier_scope = verifier_scope
        self.store = store
        self.events = events
        self.proof_of_possession = proof_of_possession
        shared = store.shared
        #: Issuers whose JWTs are verified with no upstream call and no shared
        #: store: while their keys are at hand, no flow is driven at all.
        self.at_hand = {
            name: runtime
            for name, runtime in issuers.items()
            if not runtime.config.check_revocation and not (shared is not None and shared.share_jwt_results)
        }
        #: The scopes under which shared signature facts are keyed: who established them.
        self.jwt_scopes = {name: jwt_scope(runtime) for name, runtime in issuers.items()}
        #: Tokens the guard's inlined hit did not answer (a plain int, as the guard's hits).
        self.misses = 0

    # ------------------------------------------------------------------ a miss, before any flow

    def verify_miss(
        self, token: str, now: float, cache_key: bytes | None, entry: CachedResult | None, client: str | None
    ) -> tuple[TokenClaims, None] | tuple[None, GuardFlow[TokenClaims]]:
        """After the guard's inlined hit failed: ``(claims, None)`` when the
        token was verified on the spot, else ``(None, the flow that verifies it)``.

        ``cache_key`` and ``entry`` are the token's cache key and what the
        cache held under it, both ``None`` when the token is oversized.

        Raises:
            InvalidToken: the token is oversized, its rejection is cached, or it is refused now.
        """
        if cache_key is None:
            raise InvalidToken("token exceeds the maximum size")
        if entry is not None:
            self.retire(self.store.local, cache_key, entry, now)
        self.misses += 1
        return self.verify_or_flow(token, now, cache_key, client)

    @staticmethod
    def retire(cache: CacheBackend, cache_key: bytes, entry: CachedResult, now: float) -> None:
        """What the cache held for a token that missed the hit: raise a cached
        rejection that still holds, drop an entry that may no longer be served.

        Raises:
            InvalidToken: the token's rejection is cached.
        """
        if entry.claims is None:
            if now < entry.cache_until:
                raise InvalidToken(entry.reason or "invalid token")
            cache.delete(cache_key)
        elif not serves(entry, now):
            cache.delete(cache_key)

    def verify_or_flow(
        self, token: str, now: float, cache_key: bytes, client: str | None
    ) -> tuple[TokenClaims, None] | tuple[None, GuardFlow[TokenClaims]]:
        """A miss: ``(claims, None)`` when the token could be verified on the
        spot, else ``(None, the flow that verifies it)``."""
        jws = self.jws_of(token)
        if jws is not None:
            claims = self.verify_at_hand(jws, cache_key, now)
            if claims is not None:
                return claims, None
        return None, self.verify_flow(token, jws, cache_key, now, client)

    def jws_of(self, token: str) -> UnverifiedJWS | None:
        """``token`` parsed as a JWS, or ``None`` when it is not one (an opaque token).

        Raises:
            InvalidToken: it is malformed and nothing but local verification could accept it.
        """
        if not looks_like_jws(token):
            return None
        try:
            return parse_jws(token)
        except InvalidToken:
            # Opaque tokens may contain dots; let the custom verifier or
            # introspection judge it.
            if self.introspection is None and self.verifier is None:
                raise
            return None

    def verify_at_hand(self, jws: UnverifiedJWS, cache_key: bytes, now: float) -> TokenClaims | None:
        """The common case, with no flow to drive: a JWT of an issuer verified
        with no upstream call, whose keys are at hand. ``None``: anything else,
        for :meth:`verify_flow`.
        """
        iss = peek_issuer(jws)
        runtime = self.at_hand.get(iss) if iss is not None else None
        if runtime is None:
            return None
        keys = runtime.keys_at_hand(jws, now)
        if keys is None:
            return None
        self.events["jwt_verified_locally"] += 1
        claims, thumbprint = runtime.verify_now(jws, keys, now)
        self.admit(claims)
        self.store.keep(cache_key, jwt_entry(claims, runtime, thumbprint, now, None), now)
        return claims

    def admit(self, claims: TokenClaims, *, check_text: bool = False) -> None:
        """The checks every kind of verified claims passes (JWT, introspection, custom verifier).

        ``check_text``: also refuse lone surrogates (RFC 7493 §2.1), for
        claims that did not come through the strict JWT parser.

        Raises:
            InvalidToken: a sender-constrained token presented as Bearer, or
                a claim that is not Unicode text.
        """
        if not self.proof_of_possession and "cnf" in claims:
            check_not_sender_constrained(claims.get("cnf"))
        if check_text and has_lone_surrogate(claims.to_dict()):
            raise InvalidToken("malformed claims")

    # ------------------------------------------------------------------ the flow

    def verify_flow(
        self, token: str, jws: UnverifiedJWS | None, cache_key: bytes, now: float, client: str | None
    ) -> GuardFlow[TokenClaims]:
        """Verify ``token`` by whichever method it belongs to, with every effect it needs."""
        runtime = None
        if jws is not None:
            iss = peek_issuer(jws)
            runtime = self.issuers.get(iss) if iss is not None else None
        if runtime is not None:
            assert jws is not None
            return (yield from self._jwt_flow(token, jws, runtime, cache_key, now, client))
        if self.verifier is not None:
            claims = yield from self._custom_flow(token, self.verifier, cache_key, now)
            if claims is not None:
                return claims
        introspection = self.introspection
        if jws is not None and not self.may_introspect(peek_issuer(jws)):
            diagnostics.issuer_unknown(jws.payload.get("iss"), self.trusted_issuers())
            raise InvalidToken("untrusted issuer")
        if introspection is None:
            raise InvalidToken("token format not accepted")
        result = yield from introspection.answer(token, cache_key, now, client)
        opaque_claims = result.claims
        assert opaque_claims is not None
        self.admit(opaque_claims, check_text=True)
        self.store.keep(
            cache_key, introspection_entry(opaque_claims, result.ttl, introspection.config.leeway, now), now
        )
        return opaque_claims

    def _jwt_flow(
        self,
        token: str,
        jws: UnverifiedJWS,
        runtime: IssuerRuntime,
        cache_key: bytes,
        now: float,
        client: str | None,
    ) -> GuardFlow[TokenClaims]:
        store = self.store
        # A revocation-checking guard verifies the signature itself (cheap)
        # and shares only the introspection answer: a signature fact from
        # a guard that does not check revocation must not spare the check.
        fact_key = None
        if store.shared is not None and store.shared.share_jwt_results and not runtime.config.check_revocation:
            fact_key = store.fact_key(self.jwt_scopes[runtime.config.issuer], token)
            found = yield from self._jwt_from_fact(fact_key, runtime, cache_key, now)
            if found is not None:
                return found
        self.events["jwt_verified_locally"] += 1
        claims, thumbprint = yield from runtime.verify_flow(jws, now)
        self.admit(claims)
        cache_until = None
        if runtime.config.check_revocation and self.introspection is not None:
            result = yield from self.introspection.answer(token, cache_key, now, client)
            cache_until = now + result.ttl
        entry = jwt_entry(claims, runtime, thumbprint, now, cache_until)
        store.keep(cache_key, entry, now)
        if fact_key is not None:
            yield from store.write_fact(fact_key, jwt_fact(jws.header, claims, thumbprint), entry.cache_until - now)
        return claims

    def _jwt_from_fact(
        self, fact_key: str, runtime: IssuerRuntime, cache_key: bytes, now: float
    ) -> GuardFlow[TokenClaims | None]:
        """Claims from another process's signature fact, re-checked with this guard's policy.

        ``None`` when there is no usable fact (the caller verifies afresh).

        Raises:
            InvalidToken: this guard's policy refuses the token.
        """
        fact = yield from self.store.read_fact(fact_key, "jwt")
        if fact is None:
            self.events["shared_cache_miss"] += 1
            return None
        claims, thumbprint = read_jwt_fact(fact, runtime.policy, now)
        self.admit(claims)
        entry = jwt_entry(claims, runtime, thumbprint, now, None)
        # Judged against the keys this process trusts: a result signed by a
        # key since withdrawn here is verified afresh.
        if not serves(entry, now):
            self.events["shared_cache_miss"] += 1
            return None
        self.events["shared_cache_hit"] += 1
        self.store.keep(cache_key, entry, now)
        return claims

    def _custom_flow(
        self, token: str, verifier: Callable[[str], object], cache_key: bytes, now: float
    ) -> GuardFlow[TokenClaims | None]:
        """The custom verifier's claims (shared by another process, or asked for);
        ``None`` when it does not know the token."""
        store = self.store
        fact_key = store.fact_key(self.verifier_scope, token) if store.shared is not None else None
        if fact_key is not None:
            fact = yield from store.read_fact(fact_key, "custom")
            shared_answer = read_custom_fact(fact) if fact is not None else None
            if shared_answer is not None:
                self.events["shared_cache_hit"] += 1
                return self.accept_custom_answer(cache_key, shared_answer, now)[0]
            self.events["shared_cache_miss"] += 1
        answer = yield CallVerifier(verifier, token)
        if answer is None:
            return None
        claims, until = self.accept_custom_answer(cache_key, answer, now)
        if fact_key is not None:
            assert isinstance(answer, Mapping)
            yield from store.write_fact(fact_key, custom_fact(answer), until - now)
        return claims

    def accept_custom_answer(self, cache_key: bytes, answer: object, now: float) -> tuple[TokenClaims, float]:
        """Claims from a custom verifier's answer (fresh or shared), kept in process; and until when.

        Raises:
            TypeError: the verifier returned something other than a mapping.
            InvalidToken: the claims are refused (expired, sender-constrained, not text).
        """
        if not isinstance(answer, Mapping):
            raise TypeError("a custom verifier must return a mapping of claims or None")
        claims = TokenClaims(answer, token_type="custom")
        self.admit(claims, check_text=True)
        if claims.exp is not None and now >= claims.exp:
            raise InvalidToken("token expired")
        cache_until = now + self.verifier_cache_ttl
        if claims.exp is not None:
            cache_until = min(cache_until, claims.exp)
        self.store.keep(cache_key, custom_entry(claims, cache_until), now)
        return claims, cache_until

    def may_introspect(self, iss: str | None) -> bool:
        """Whether a token naming ``iss`` may be introspected (not a JWT of another issuer)."""
        introspection = self.introspection
        if introspection is None:
            return False
        config = introspection.config
        return config.issuer is None or iss is None or iss == config.issuer

    def trusted_issuers(self) -> list[str]:
        """For diagnostics: every issuer whose tokens this guard would accept."""
        extra = self.introspection.config.issuer if self.introspection is not None else None
        return [*self.issuers, *([extra] if extra and extra not in self.issuers else [])]
