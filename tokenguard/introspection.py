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
* An active answer is still checked: not past ``exp``, not before ``nbf``,
  ``iss`` and ``aud`` when present and configured.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote_plus

from ._http import Flow, HttpReply, HttpRequest, json_object
from .claims import TokenClaims, numeric_date
from .errors import ConfigurationError
from .scopes import DEFAULT_SCOPE_CLAIMS
from .sources import MetadataSource

if TYPE_CHECKING:
    from .keys import KeySet

__all__ = [
    "ClientAuthMethod",
    "Introspection",
    "IntrospectionResult",
    "build_introspection_request",
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
            raise ConfigurationError("introspection needs an endpoint or an issuer to discover it from")
        if not self.client_id:
            raise ConfigurationError("introspection needs a client_id")
        if self.auth_method not in ("client_secret_basic", "client_secret_post"):
            raise ConfigurationError(f"unsupported auth_method {self.auth_method!r}")
        if self.cache_ttl < 0 or self.negative_ttl < 0:
            raise ConfigurationError("cache TTLs cannot be negative")

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


def interpret_introspection(reply: HttpReply, config: Introspection, now: float) -> IntrospectionResult:
    """Turn the endpoint's reply into claims, an inactive result, or an upstream error.

    Raises:
        ServiceUnavailable: non-200, not JSON, not an object: the server is at fault.
    """
    document = json_object(reply, "introspection")
    inactive = IntrospectionResult(None, config.negative_ttl, "token is not active")
    if document.get("active") is not True:
        return inactive
    leeway = config.leeway
    exp = numeric_date(document.get("exp"))
    if "exp" in document and exp is None:
        return IntrospectionResult(None, config.negative_ttl, "malformed exp in introspection answer")
    if exp is not None and now >= exp + leeway:
        return IntrospectionResult(None, config.negative_ttl, "token expired")
    nbf = numeric_date(document.get("nbf"))
    if nbf is not None and now + leeway < nbf:
        return IntrospectionResult(None, 0.0, "token not yet valid")
    if config.issuer is not None and "iss" in document and document["iss"] != config.issuer:
        return IntrospectionResult(None, config.negative_ttl, "wrong issuer")
    audiences = config.audiences
    if audiences is not None and "aud" in document:
        aud = document["aud"]
        values = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(isinstance(a, str) and a in audiences for a in values):
            return IntrospectionResult(None, config.negative_ttl, "wrong audience")
    ttl = config.cache_ttl if exp is None else min(config.cache_ttl, exp + leeway - now)
    claims = TokenClaims(document, token_type="opaque", scope_claims=config.scope_claims)
    return IntrospectionResult(claims, max(ttl, 0.0))


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
