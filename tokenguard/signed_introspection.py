"""Signed introspection answers (RFC 9701): ``application/token-introspection+jwt``.

No I/O. With ``Introspection(signed_answers=True)`` the request asks for a JWT
(``Accept: application/token-introspection+jwt``) and the answer must be one:
signed by the authorization server's keys (its published JWKS), typed
``token-introspection+jwt`` (RFC 9701 §5), issued by the configured issuer and
addressed to this resource server (``aud`` = our ``client_id``). Its
``token_introspection`` member is then read like a plain RFC 7662 answer.

An answer that fails any of this is an upstream failure, not the token's:
503 (fail closed), never an acceptance and never ``invalid_token``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ._effects import HttpReply
from .errors import InvalidToken, ServiceUnavailable
from .jwt import parse_jws

if TYPE_CHECKING:
    from .keys import KeySet

__all__ = ["SIGNED_INTROSPECTION_MEDIA_TYPE", "answer_kid", "open_signed_answer"]

SIGNED_INTROSPECTION_MEDIA_TYPE = "application/token-introspection+jwt"
#: Asymmetric algorithms accepted on signed answers (RFC 9701 §5 leaves the
#: choice to the AS; oidc-provider and Keycloak default to RS256).
DEFAULT_SIGNED_ANSWER_ALGORITHMS = frozenset({"RS256", "PS256", "ES256", "ES384", "EdDSA", "RS384", "RS512", "PS384"})


def _refuse(reason: str) -> ServiceUnavailable:
    return ServiceUnavailable(f"signed introspection answer refused: {reason}", reason="introspection_signature")


def _compact(reply: HttpReply) -> str:
    if reply.status in (401, 403):  # RFC 7662 §2.1: our credentials refused; the same words as a plain answer's
        raise ServiceUnavailable(
            f"introspection endpoint refused this API's client credentials (HTTP {reply.status})",
            reason="client_auth_failed",
        )
    if reply.status != 200:
        raise ServiceUnavailable(f"introspection answered {reply.status}", reason=f"http_{reply.status // 100}xx")
    media = reply.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    # RFC 9701 §5: the answer's media type is application/token-introspection+jwt.
    if media != SIGNED_INTROSPECTION_MEDIA_TYPE:
        raise _refuse("not a token-introspection+jwt answer")
    try:
        return reply.body.decode("ascii").strip()
    except UnicodeDecodeError:
        raise _refuse("not a compact JWS") from None


def answer_kid(reply: HttpReply) -> str | None:
    """The ``kid`` of a signed answer's key, to pick or fetch the key set.

    Raises:
        ServiceUnavailable: not a signed introspection answer.
    """
    try:
        kid = parse_jws(_compact(reply)).header.get("kid")
    except InvalidToken:
        raise _refuse("malformed JWS") from None
    return kid if isinstance(kid, str) else None


def open_signed_answer(
    reply: HttpReply, keys: KeySet, *, issuer: str, client_id: str, now: float, leeway: float = 60.0
) -> HttpReply:
    """Verify a signed answer; return its ``token_introspection`` as a plain JSON reply.

    Args:
        reply: the introspection endpoint's answer.
        keys: the authorization server's keys.
        issuer: the expected ``iss``.
        client_id: this resource server's id, expected in ``aud``.
        now: the current time; ``iat`` must not lie ahead of it.
        leeway: clock skew tolerated on ``iat``/``exp``.

    Raises:
        ServiceUnavailable: bad signature, type, issuer, audience or content.
    """
    try:
        jws = parse_jws(_compact(reply))
    except InvalidToken:
        raise _refuse("malformed JWS") from None
    header = jws.header
    typ = header.get("typ")
    # RFC 9701 §5: typ is token-introspection+jwt (the application/ prefix may be omitted).
    if not isinstance(typ, str) or typ.lower().removeprefix("application/") != "token-introspection+jwt":
        raise _refuse("wrong typ")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in DEFAULT_SIGNED_ANSWER_ALGORITHMS or "crit" in header:
        raise _refuse("algorithm not allowed")
    kid = header.get("kid")
    candidates = keys.candidates(kid if isinstance(kid, str) else None, alg)
    if not any(
        (verifier := key.verifiers.get(alg)) is not None and verifier(jws.signing_input, jws.signature)
        for key in candidates
    ):
        raise _refuse("bad signature")
    payload = jws.payload
    if payload.get("iss") != issuer:
        raise _refuse("wrong issuer")
    aud = payload.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if client_id not in audiences:
        raise _refuse("not addressed to this resource server")
    iat = payload.get("iat")
    if not isinstance(iat, int | float) or isinstance(iat, bool) or iat > now + leeway:
        raise _refuse("missing or future iat")
    exp = payload.get("exp")
    if exp is not None and (not isinstance(exp, int | float) or isinstance(exp, bool) or exp + leeway <= now):
        raise _refuse("expired")
    inner = payload.get("token_introspection")
    if not isinstance(inner, dict):
        raise _refuse("no token_introspection member")
    return HttpReply(200, {"content-type": "application/json"}, json.dumps(inner).encode())
