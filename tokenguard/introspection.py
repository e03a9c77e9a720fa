"""RFC 7662 token introspection: the request, the answer, and the flow.

The request and the interpretation of the answer are pure functions; the
flow only asks the runner to POST. Rules:

* The token is sent exactly as presented, as one form field; httpx
  form-encodes it, so a token cannot smuggle in extra fields.
* Client authentication is ``client_secret_basic`` (id and secret
  form-urlencoded before base64, RFC 6749 §2.3.1, which many servers get
  wrong with ``:`` or ``%`` in secrets) or ``client_secret_post``.
* Only ``"active": true`` (the JSON boolean) is active. ``false``, a missing
  member, ``"true"`` as a string: inactive. A non-200 status, a body that is
  not a JSON object: the server is broken, so 503, never 401 and never 200.
* An active answer is read as strictly as a JWT: duplicate member names,
  a malformed ``exp``, ``nbf`` or ``iat``, or a ``token_type`` that is not an
  access-token type (a refresh token sent as Bearer; ``DPoP`` counts only
  with a ``cnf`` key, RFC 9449 §6.2) are refused; then not
  past ``exp``, not before ``nbf``, ``iss`` when configured. ``aud`` is
  optional in RFC 7662 §2.2, so an answer without it is accepted, but a
  present ``aud`` must name one of the configured audiences.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote_plus

from . import diagnostics
from ._effects import Flow, HttpReply, HttpRequest
from .claims import TokenClaims, numeric_date
from .errors import ConfigurationError, InvalidToken, ServiceUnavailable
from .scopes import DEFAULT_SCOPE_CLAIMS
from .sources import MetadataSource

if TYPE_CHECKING:
    from .keys import KeySet

__all__ = [
    "ClientAuthMethod",
    "Introspection",
    "IntrospectionResult",
    "build_introspection_request",
    "check_answer",
    "interpret_introspection",
]

ClientAuthMethod = Literal["client_secret_basic", "client_secret_post"]


@dataclass(frozen=True, slots=True)
class Introspection:
    """Where and how to introspect opaque tokens.

    Args:
        endpoint: the introspection URL; ``None`` takes ``introspection_endpoint``
            from ``issuer``'s metadata.
        client_id / client_secret: this API's credentials at the authorization server.
        auth_method: ``client_secret_basic`` (default) or ``client_secret_post``.
        issuer: the authorization server's issuer; when set, an answer naming
            another ``iss`` is refused, and JWTs naming another issuer are not
            sent here.
        audience: accepted ``aud`` values; checked when the answer has ``aud``.
        token_type_hint: sent as ``token_type_hint``; ``None`` omits it.
        cache_ttl: how long an active answer is reused (never past ``exp``).
            Longer means fewer calls and slower revocation (RFC 7662 §4).
        negative_ttl: how long an inactive answer is reused.
        leeway: clock skew tolerated on ``exp``/``nbf`` in the answer.
        scope_claims: members read for scopes.
        max_response_bytes: largest accepted introspection answer.
        signed_answers: ask for and require RFC 9701 signed answers
            (``application/token-introspection+jwt``), verified with the
            issuer's keys; needs ``issuer`` to be one of the guard's issuers.
    """

    endpoint: str | None = None
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    auth_method: ClientAuthMethod = "client_secret_basic"
    issuer: str | None = None
    audience: str | Sequence[str] | None = None
    token_type_hint: str | None = "access_token"
    cache_ttl: float = 60.0
    negative_ttl: float = 10.0
    leeway: float = 0.0
    scope_claims: tuple[str, ...] = DEFAULT_SCOPE_CLAIMS
    max_response_bytes: int = 64 * 1024
    signed_answers: bool = False

    def __post_init__(self) -> None:
        if self.endpoint is None and self.issuer is None:
            raise ConfigurationError("Introspection needs endpoint= or issuer= (to discover introspection_endpoint)")
        if not self.client_id:
            raise ConfigurationError("Introspection needs client_id")
        if self.auth_method not in ("client_secret_basic", "client_secret_post"):
            raise ConfigurationError(
                f"unsupported auth_method {self.auth_method!r}: use 'client_secret_basic' or 'client_secret_post'"
            )
        if self.cache_ttl < 0 or self.negative_ttl < 0:
            raise ConfigurationError("cache_ttl and negative_ttl cannot be negative")
        if isinstance(self.scope_claims, str):
            raise ConfigurationError(f"scope_claims must be a sequence of claim names, not {self.scope_claims!r}")

    @property
    def audiences(self) -> tuple[str, ...] | None:
        if self.audience is None:
            return None
        return (self.audience,) if isinstance(self.audience, str) else tuple(self.audience)


def basic_credentials(client_id: str, client_secret: str) -> str:
    """The ``Authorization: Basic`` value per RFC 6749 §2.3.1 (form-urlencode, then base64)."""
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def build_introspection_request(
    token: str, endpoint: str, config: Introspection, *, coalesce_key: str | None = None
) -> HttpRequest:
    """The POST that asks ``endpoint`` about ``token`` (RFC 7662 §2.1)."""
    form: list[tuple[str, str]] = [("token", token)]
    if config.token_type_hint:
        form.append(("token_type_hint", config.token_type_hint))
    headers: list[tuple[str, str]] = []
    if config.signed_answers:
        # RFC 9701 §4: ask for a signed answer.
        headers.append(("Accept", "application/token-introspection+jwt"))
    if config.auth_method == "client_secret_basic":
        headers.append(("Authorization", basic_credentials(config.client_id, config.client_secret)))
    else:
        form.extend([("client_id", config.client_id), ("client_secret", config.client_secret)])
    return HttpRequest(
        "POST",
        endpoint,
        headers=tuple(headers),
        form=tuple(form),
        coalesce_key=coalesce_key,
        purpose="introspection",
        max_bytes=config.max_response_bytes,
    )


@dataclass(frozen=True, slots=True)
class IntrospectionResult:
    """An interpreted answer: the claims when active, and how long it may be reused."""

    claims: TokenClaims | None
    ttl: float
    reason: str = ""
    #: The answer as received (a JSON object), shared with other processes as
    #: a fact that each re-checks with its own configuration.
    answer: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)


#: ``token_type`` values that name an access token: RFC 6749 §7.1 types as
#: servers send them (Keycloak, Hydra, Authlib: ``Bearer``), the RFC 8693
#: §3 identifier, and the bare name some servers use. Compared
#: case-insensitively. ``DPoP`` (RFC 9449 §6.2) is admitted separately, only
#: with the ``cnf`` that names its key.
ACCESS_TOKEN_TYPES = frozenset(("bearer", "access_token", "urn:ietf:params:oauth:token-type:access_token"))


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _DuplicateMember
    return result


class _DuplicateMember(ValueError):
    pass


_STRICT = json.JSONDecoder(object_pairs_hook=_unique_members)


def interpret_introspection(reply: HttpReply, config: Introspection, now: float) -> IntrospectionResult:
    """Turn the endpoint's reply into claims, an inactive result, or an upstream error.

    Raises:
        ServiceUnavailable: non-200, not JSON, not an object: the server is at fault.
        InvalidToken: the answer repeats a member name: two parsers could read
            it differently (as for JWT JSON, RFC 7515 §5.2), so it is refused.
    """
    if reply.status in (401, 403):  # RFC 7662 §2.1: the endpoint authenticates us; the token is not at fault
        raise ServiceUnavailable(
            f"introspection endpoint refused this API's client credentials (HTTP {reply.status})",
            reason="client_auth_failed",
        )
    if reply.status != 200:
        raise ServiceUnavailable(f"introspection answered HTTP {reply.status}")
    try:
        # Strict UTF-8 (RFC 8259 §8.1): json.loads(bytes) would also take UTF-16/32.
        document = _STRICT.decode(reply.body.decode("utf-8"))
    except _DuplicateMember:
        raise InvalidToken("malformed introspection answer") from None
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise ServiceUnavailable("introspection answer is not valid JSON") from None
    if not isinstance(document, dict):
        raise ServiceUnavailable("introspection answer is not a JSON object")
    return check_answer(document, config, now)


def _malformed(name: str, document: Mapping[str, Any]) -> bool:
    return name in document and numeric_date(document[name]) is None


def check_answer(document: Mapping[str, Any], config: Introspection, now: float) -> IntrospectionResult:
    """Check a parsed answer against ``config`` at ``now`` (also for answers other processes shared).

    The reverse is not needed: the answer itself is what gets shared.
    """
    inactive = IntrospectionResult(None, config.negative_ttl, "token is not active", document)
    if document.get("active") is not True:
        return inactive
    leeway = config.leeway
    for name in ("exp", "nbf", "iat"):
        # A malformed date is refused, never ignored (as for JWTs, RFC 7519 §2).
        if _malformed(name, document):
            return IntrospectionResult(None, config.negative_ttl, f"malformed {name} in introspection answer", document)
    token_type = document.get("token_type")
    if isinstance(token_type, str) and token_type.lower() == "dpop" and isinstance(document.get("cnf"), dict):
        # RFC 9449 §6.2: a DPoP-bound access token is introspected with
        # token_type "DPoP" and its key in cnf.jkt. Admitted here as an access
        # token; whether it may be used without its proof is decided by the
        # guard (a guard without DPoP refuses any cnf-bound token as Bearer,
        # RFC 9449 §7.2). "DPoP" without cnf names no key: refused below.
        pass
    elif token_type is not None and (not isinstance(token_type, str) or token_type.lower() not in ACCESS_TOKEN_TYPES):
        # RFC 7662 §2.2: token_type says what the token is; a refresh token
        # (or anything but an access token) presented as Bearer is refused.
        return IntrospectionResult(None, config.negative_ttl, "not an access token", document)
    token_use = document.get("token_use")  # Ory Hydra's name for the same fact
    if token_use is not None and token_use != "access_token":
        return IntrospectionResult(None, config.negative_ttl, "not an access token", document)
    exp = numeric_date(document.get("exp"))
    if exp is not None and now >= exp + leeway:
        return IntrospectionResult(None, config.negative_ttl, "token expired", document)
    nbf = numeric_date(document.get("nbf"))
    if nbf is not None and now + leeway < nbf:
        return IntrospectionResult(None, 0.0, "token not yet valid", document)
    if config.issuer is not None and "iss" in document and document["iss"] != config.issuer:
        diagnostics.issuer_unknown(document["iss"], [config.issuer])
        return IntrospectionResult(None, config.negative_ttl, "wrong issuer", document)
    audiences = config.audiences
    if audiences is not None and "aud" in document:
        aud = document["aud"]
        values = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(isinstance(a, str) and a in audiences for a in values):
            diagnostics.audience_mismatch(config.issuer or config.endpoint or "introspection", audiences, aud)
            return IntrospectionResult(None, config.negative_ttl, "wrong audience", document)
    ttl = config.cache_ttl if exp is None else min(config.cache_ttl, exp + leeway - now)
    claims = TokenClaims(document, token_type="opaque", scope_claims=config.scope_claims)
    return IntrospectionResult(claims, max(ttl, 0.0), "", document)


def introspect_flow(
    token: str,
    config: Introspection,
    metadata: MetadataSource | None,
    now: float,
    *,
    coalesce_key: str | None,
    keys_flow: Callable[[str | None, float], Flow[KeySet]] | None = None,
) -> Flow[IntrospectionResult]:
    """Find the endpoint (configured or discovered), ask it, interpret the answer.

    ``keys_flow`` gives the issuer's keys for RFC 9701 signed answers.
    """
    endpoint = config.endpoint
    if endpoint is None:
        assert metadata is not None
        endpoint = yield from metadata.endpoint_flow("introspection_endpoint", now)
        if endpoint is None:
            return IntrospectionResult(None, 0.0, "opaque tokens are not supported by this issuer")
    reply = yield build_introspection_request(token, endpoint, config, coalesce_key=coalesce_key)
    if config.signed_answers:
        from .signed_introspection import answer_kid, open_signed_answer

        assert keys_flow is not None and config.issuer is not None
        keys = yield from keys_flow(answer_kid(reply), now)
        reply = open_signed_answer(reply, keys, issuer=config.issuer, client_id=config.client_id, now=now)
    return interpret_introspection(reply, config, now)
