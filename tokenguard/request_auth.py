"""One entry for a whole request: token, DPoP proof and client certificate.

:meth:`TokenGuard.verify` judges a token alone. A sender-constrained token
(RFC 9449 DPoP, RFC 8705 mTLS) can only be judged with the request it came
in: its method and URI (``htm``/``htu``), its ``DPoP`` header and the TLS
client certificate. Adapters build a :class:`RequestContext` and call
:func:`verify_request` (async) or :func:`verify_request_sync`; both share the
pure steps below and differ only in awaiting the token check and the replay
store.

Strategy:

* ``Authorization: DPoP <token>`` needs exactly one valid proof whose key
  thumbprint equals the token's ``cnf.jkt``; its ``jti`` is recorded last,
  after every other check passed, so a refused request burns nothing.
* ``Authorization: Bearer <token>`` is refused when the token is DPoP-bound
  (downgrade, RFC 9449 §7.2) or when DPoP is required; a ``DPoP`` header next
  to a Bearer token is ambiguous: 400.
* A token with ``cnf.x5t#S256`` must come with that certificate (RFC 8705 §3).
* Every error is tagged with the scheme the request used, so the challenge
  carries the error on that scheme only (RFC 9449 §7.2).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, unquote

from .bearer import parameter_tokens
from .challenge import Challenge
from .claims import TokenClaims
from .dpop import DPoPProof, DPoPSettings, InvalidDPoPProof, UseDPoPNonce, check_proof, single_proof
from .errors import NO_STORE_HEADERS, InvalidRequest, InvalidToken, MissingToken, TokenError
from .forwarded import TrustedProxies, proxy_certificate, request_url
from .mtls import asgi_client_certificate, bound_certificate, check_certificate_binding, load_certificate
from .replay import replay_key
from .sender_config import judged_with_request

if TYPE_CHECKING:
    from ._guardlike import GuardLike as TokenGuard
    from .options import AdapterOptions

__all__ = [
    "RequestContext",
    "RequestVerdict",
    "asgi_request_context",
    "challenge_headers",
    "verify_request",
    "verify_request_sync",
    "wsgi_request_context",
]

Scheme = Literal["Bearer", "DPoP"]

# RFC 9449 §7.1: DPoP credentials use the token68 syntax, like Bearer.
_DPOP_CREDENTIALS = re.compile(r"[Dd][Pp][Oo][Pp] +([A-Za-z0-9\-._~+/]+=*)")

#: Where adapters keep the :class:`RequestVerdict` of a request (ASGI scope key, WSGI environ key).
VERDICT_KEY = "tokenguard.verdict"


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What the guard needs to know about a request beyond its token.

    Args:
        method: the HTTP method, as sent.
        url: the absolute URI the client addressed (query optional, ignored
            for DPoP), already corrected for trusted proxies.
        headers: ``(name, value)`` pairs; names compared case-insensitively.
        client_certificate: the TLS client certificate (DER), if any.
        peer: the peer address (for rate limits).
        query_tokens / form_tokens: the request's ``access_token`` parameters
            (RFC 6750 §2.2-2.3), names compared after percent-decoding.
        token_rules: the adapter's options deciding where a token may be
            (``None``: the guard's own settings).
    """

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    client_certificate: bytes | None = None
    peer: str | None = None
    query_tokens: tuple[str, ...] = ()
    form_tokens: tuple[str, ...] = ()
    token_rules: AdapterOptions | None = None

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (lower-case), in order."""
        return [v for k, v in self.headers if k.lower() == name]


@dataclass(frozen=True, slots=True)
class RequestVerdict:
    """A request that passed: its claims and how the token was bound.

    Attributes:
        claims: the token's claims.
        scheme: ``"Bearer"`` or ``"DPoP"``.
        dpop_jkt: the proof key's RFC 7638 thumbprint (DPoP requests).
        certificate_thumbprint: ``x5t#S256`` of the bound certificate (mTLS-bound tokens).
        response_headers: headers to add to the response (a fresh ``DPoP-Nonce``).
    """

    claims: TokenClaims
    scheme: Scheme
    dpop_jkt: str | None = None
    certificate_thumbprint: str | None = None
    response_headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class _Presented:
    scheme: Scheme
    token: str
    proof: DPoPProof | None


def _tag(error: TokenError, scheme: Scheme) -> TokenError:
    error.auth_scheme = scheme
    return error


def _dpop_settings(guard: TokenGuard) -> DPoPSettings | None:
    settings = guard.dpop
    return settings if settings is not None and settings.enabled else None


def _credentials(guard: TokenGuard, context: RequestContext, dpop: DPoPSettings | None) -> tuple[Scheme, str]:
    """The scheme and token of the request.

    Raises:
        MissingToken / InvalidRequest / InvalidToken: as :meth:`TokenGuard.extract`.
    """
    authorization = context.header_values("authorization")
    if dpop is not None and len(authorization) == 1:
        value = authorization[0].strip(" \t")
        if value[:4].lower() == "dpop" and value[4:5] in (" ", "\t", ""):
            if len(value) > guard.max_token_bytes + 64:
                # Bound the regex work before running it.
                raise _tag(InvalidToken("token exceeds the maximum size"), "DPoP")
            match = _DPOP_CREDENTIALS.fullmatch(value)
            if match is None:
                raise _tag(InvalidRequest("malformed Authorization header"), "DPoP")
            if context.query_tokens or context.form_tokens:
                raise _tag(InvalidRequest("more than one access token in the request"), "DPoP")
            token = match.group(1)
            if len(token) > guard.max_token_bytes:
                raise _tag(InvalidToken("token exceeds the maximum size"), "DPoP")
            return "DPoP", token
    rules = context.token_rules
    if rules is not None:
        return "Bearer", rules.extract(guard, authorization, context.query_tokens, context.form_tokens)
    return "Bearer", guard.extract(authorization, context.query_tokens, context.form_tokens)


def _present(guard: TokenGuard, context: RequestContext, now: float) -> _Presented:
    """Every check that needs no token verification and no store."""
    dpop = _dpop_settings(guard)
    scheme, token = _credentials(guard, context, dpop)
    proofs = context.header_values("dpop")
    if dpop is None:
        return _Presented(scheme, token, None)
    try:
        proof_value = single_proof(proofs)
    except InvalidRequest as error:
        raise _tag(error, scheme) from None
    if scheme == "Bearer":
        if dpop.mode == "required":
            raise _tag(InvalidToken("DPoP-bound tokens are required"), "DPoP")
        if proof_value is not None:
            # RFC 9449 §7.2: a proof with a Bearer token is ambiguous; do not guess.
            raise _tag(InvalidRequest("a DPoP proof was sent with a Bearer token"), "Bearer")
        return _Presented(scheme, token, None)
    if proof_value is None:
        raise InvalidDPoPProof("the DPoP proof is missing")
    proof = check_proof(proof_value, method=context.method, url=context.url, access_token=token, now=now, settings=dpop)
    nonces = dpop.nonces
    if nonces is not None and (proof.nonce is None or not nonces.is_valid(proof.nonce, now)):
        # RFC 9449 §9: a missing or stale nonce gets use_dpop_nonce and a fresh one.
        raise UseDPoPNonce(nonces.current(now))
    return _Presented(scheme, token, proof)


def _bind(guard: TokenGuard, context: RequestContext, presented: _Presented, claims: TokenClaims) -> RequestVerdict:
    """Match the verified token's ``cnf`` against the proof and the certificate."""
    cnf = claims.get("cnf")
    if cnf is not None and not isinstance(cnf, Mapping):
        raise InvalidToken("malformed cnf claim")
    jkt = cnf.get("jkt") if cnf is not None else None
    if jkt is not None and (not isinstance(jkt, str) or not jkt):
        raise InvalidToken("malformed cnf claim")
    dpop = _dpop_settings(guard)
    if dpop is not None:
        if presented.scheme == "Bearer" and jkt is not None:
            # RFC 9449 §7.2: a DPoP-bound token presented as Bearer is refused (downgrade).
            raise InvalidToken("a DPoP-bound token must be sent with the DPoP scheme")
        if presented.proof is not None:
            if jkt is None:
                # RFC 9449 §7.1: the DPoP scheme is for DPoP-bound tokens only.
                raise InvalidToken("the token is not DPoP-bound")
            if jkt != presented.proof.jkt:
                # RFC 9449 §4.3 check 12 / §6: the proof key must be the bound key.
                raise InvalidDPoPProof("the DPoP proof key does not match the token binding")
    elif jkt is not None:
        # DESIGN: a sender-constrained token we cannot check is refused, not served as Bearer.
        raise InvalidToken("DPoP-bound tokens are not accepted here")
    thumbprint = None
    mtls = guard.mtls
    if mtls is not None:
        thumbprint = check_certificate_binding(cnf, context.client_certificate, mtls)
    elif bound_certificate(cnf) is not None:
        raise InvalidToken("certificate-bound tokens are not accepted here")
    headers: tuple[tuple[str, str], ...] = ()
    if dpop is not None and dpop.nonces is not None:
        # RFC 9449 §8.2: a fresh nonce on success keeps clients ahead of rotation.
        headers = (("DPoP-Nonce", dpop.nonces.current(guard.clock())),)
    return RequestVerdict(
        claims=claims,
        scheme=presented.scheme,
        dpop_jkt=presented.proof.jkt if presented.proof is not None else None,
        certificate_thumbprint=thumbprint,
        response_headers=headers,
    )


def _replay_entry(guard: TokenGuard, proof: DPoPProof, now: float) -> tuple[str, float]:
    dpop = guard.dpop
    assert dpop is not None
    # The jti lives as long as its proof could be accepted: iat + window, and
    # not less than now + leeway for proofs dated slightly ahead.
    return replay_key(proof.jkt, proof.jti), max(proof.iat + dpop.max_age, now) + dpop.leeway


async def verify_request(guard: TokenGuard, context: RequestContext) -> RequestVerdict:
    """Verify a request's credentials: token, DPoP proof, certificate binding.

    Args:
        guard: the guard with its DPoP, mTLS and proxy settings.
        context: the request as :func:`asgi_request_context` builds it.

    Returns:
        The verdict: claims, scheme, bound key and headers for the response.

    Raises:
        MissingToken: no credentials.
        TokenError: anything else refused; render with :meth:`TokenGuard.error_response`.
    """
    now = guard.clock()
    scheme: Scheme = "Bearer"
    try:
        presented = _present(guard, context, now)
        scheme = presented.scheme
        judged = judged_with_request.set(True)
        try:
            claims = await guard.verify(presented.token, client=context.peer)
        finally:
            judged_with_request.reset(judged)
        verdict = _bind(guard, context, presented, claims)
        if presented.proof is not None:
            dpop = guard.dpop
            assert dpop is not None and dpop.replay is not None
            key, until = _replay_entry(guard, presented.proof, now)
            if not await dpop.replay.add(key, until, now):
                raise InvalidDPoPProof("the DPoP proof was used before")
        return verdict
    except TokenError as error:
        if "auth_scheme" in vars(error) or isinstance(error, InvalidDPoPProof | UseDPoPNonce):
            raise  # already answered on its scheme
        raise _tag(error, scheme) from None


def verify_request_sync(guard: TokenGuard, context: RequestContext) -> RequestVerdict:
    """Blocking :func:`verify_request`, for WSGI."""
    now = guard.clock()
    scheme: Scheme = "Bearer"
    try:
        presented = _present(guard, context, now)
        scheme = presented.scheme
        judged = judged_with_request.set(True)
        try:
            claims = guard.verify_sync(presented.token, client=context.peer)
        finally:
            judged_with_request.reset(judged)
        verdict = _bind(guard, context, presented, claims)
        if presented.proof is not None:
            dpop = guard.dpop
            assert dpop is not None and dpop.replay is not None
            key, until = _replay_entry(guard, presented.proof, now)
            if not dpop.replay.add_sync(key, until, now):
                raise InvalidDPoPProof("the DPoP proof was used before")
        return verdict
    except TokenError as error:
        if "auth_scheme" in vars(error) or isinstance(error, InvalidDPoPProof | UseDPoPNonce):
            raise  # already answered on its scheme
        raise _tag(error, scheme) from None


def challenge_headers(
    error: TokenError,
    dpop: DPoPSettings,
    realm: str | None,
    *,
    include_description: bool,
    extra: tuple[tuple[str, str], ...],
) -> list[tuple[str, str]]:
    """Headers for ``error`` when DPoP is enabled: ``Bearer`` and ``DPoP`` challenges side by side.

    RFC 9449 §7.2: the error goes on the scheme the request used, the other
    challenge stays bare; ``algs`` lists the accepted proof algorithms. With
    DPoP required, only the ``DPoP`` challenge is sent.
    """
    own = error.headers(realm, include_description=include_description, extra=extra)
    bearer = next((v for k, v in own if k == "WWW-Authenticate"), None)
    if bearer is None:
        return own  # not an authentication failure (503)
    headers = [(k, v) for k, v in own if k != "WWW-Authenticate"]
    on_dpop = error.auth_scheme == "DPoP" or dpop.mode == "required"
    has_error = not isinstance(error, MissingToken)
    challenges: list[str] = []
    if dpop.mode != "required":
        challenges.append(bearer if not on_dpop else Challenge(realm=realm, extra=extra).to_header())
    dpop_challenge = dpop.challenge(realm, error if on_dpop and has_error else None, include_description, extra)
    if not has_error and on_dpop:
        # A 401 without credentials may still name the scope needed (MCP
        # authorization); keep it when the DPoP challenge stands alone.
        bare = error.challenge(realm, include_description=include_description)
        if bare is not None and bare.scope:
            dpop_challenge = replace(dpop_challenge, scope=bare.scope)
    challenges.append(dpop_challenge.to_header())
    # One field: some frameworks keep only the last of repeated headers; RFC
    # 9110 §11.6.1 allows a comma-separated list of challenges.
    headers.append(("WWW-Authenticate", ", ".join(challenges)))
    if ("Cache-Control", "no-store") not in headers:
        headers = [*NO_STORE_HEADERS, *headers]
    return headers


def asgi_request_context(
    scope: Mapping[str, Any],
    proxies: TrustedProxies | None,
    form_tokens: Sequence[str] = (),
    token_rules: AdapterOptions | None = None,
) -> RequestContext:
    """A :class:`RequestContext` from an ASGI HTTP scope.

    Query tokens are read from the scope (names compared after
    percent-decoding); ``form_tokens`` are those the adapter found in the body.

    The certificate comes from the TLS extension, else (trusted proxies only)
    from the configured header; the URI's scheme and host from the scope and
    ``Host`` header, else (trusted proxies only) from ``X-Forwarded-*``.
    """
    headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", ()))
    client = scope.get("client")
    peer = str(client[0]) if client else None
    host = next((v for k, v in headers if k.lower() == "host"), None)
    if host is None:
        server = scope.get("server")
        # A UNIX socket's server is (path, None): no host to name.
        host = f"{server[0]}:{server[1]}" if server and server[1] is not None else "localhost"
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else scope.get("root_path", "") + scope["path"]
    path = path.split("?", 1)[0]
    # A WebSocket handshake is an HTTP GET: its htu uses http(s) (RFC 6455 §3).
    scheme = {"ws": "http", "wss": "https"}.get(str(scope.get("scheme", "http")), str(scope.get("scheme", "http")))
    url = request_url(scheme, host, path, headers, peer, proxies)
    certificate = asgi_client_certificate(scope)
    if certificate is None:
        raw = proxy_certificate(headers, peer, proxies)
        certificate = load_certificate(raw) if raw else None
    return RequestContext(
        method=str(scope.get("method", "GET")),
        url=url,
        headers=headers,
        client_certificate=certificate,
        peer=peer,
        query_tokens=tuple(parameter_tokens(scope.get("query_string", b""))),
        form_tokens=tuple(form_tokens),
        token_rules=token_rules,
    )


def _wsgi_raw_path(environ: Mapping[str, Any]) -> str:
    """The request path as the client sent it (percent-encoded), for ``htu``.

    PEP 3333: SCRIPT_NAME and PATH_INFO are percent-decoded (latin-1 bytes),
    while a DPoP proof names the URI as sent (RFC 9449 §4.3 check 9). The raw
    request target (``RAW_URI``: gunicorn, werkzeug; ``REQUEST_URI``: uWSGI,
    mod_wsgi, werkzeug) is used when it decodes to SCRIPT_NAME + PATH_INFO
    (a middleware that set SCRIPT_NAME from a trusted prefix header wins);
    otherwise the decoded path is encoded again (``%2F`` is then ``/``).
    """
    decoded = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
    for name in ("RAW_URI", "REQUEST_URI"):
        raw = environ.get(name)
        if isinstance(raw, str) and raw.startswith("/"):
            raw = raw.split("?", 1)[0].split("#", 1)[0]
            if unquote(raw, encoding="latin-1") == decoded:
                return raw
    return quote(decoded.encode("latin-1", "replace"), safe="/:@!$&'()*+,;=-._~")


def wsgi_request_context(
    environ: Mapping[str, Any],
    proxies: TrustedProxies | None,
    query_tokens: Sequence[str] = (),
    form_tokens: Sequence[str] = (),
    token_rules: AdapterOptions | None = None,
) -> RequestContext:
    """A :class:`RequestContext` from a WSGI environ (certificate from ``SSL_CLIENT_CERT``)."""
    from .mtls import wsgi_client_certificate

    headers: list[tuple[str, str]] = []
    for key, value in environ.items():
        if key.startswith("HTTP_") and isinstance(value, str):
            headers.append((key[5:].replace("_", "-").lower(), value))
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and isinstance(value, str):
            headers.append((key.replace("_", "-").lower(), value))
    peer = environ.get("REMOTE_ADDR")
    host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT', '80')}"
    path = _wsgi_raw_path(environ)
    url = request_url(str(environ.get("wsgi.url_scheme", "http")), str(host), path, headers, peer, proxies)
    certificate = wsgi_client_certificate(environ)
    if certificate is None:
        raw = proxy_certificate(headers, peer, proxies)
        certificate = load_certificate(raw) if raw else None
    return RequestContext(
        method=str(environ.get("REQUEST_METHOD", "GET")),
        url=url,
        headers=tuple(headers),
        client_certificate=certificate,
        peer=str(peer) if peer else None,
        query_tokens=tuple(query_tokens),
        form_tokens=tuple(form_tokens),
        token_rules=token_rules,
    )


def response_header_pairs(verdict: RequestVerdict | None) -> Iterable[tuple[str, str]]:
    """Headers an adapter adds to a successful response."""
    return verdict.response_headers if verdict is not None else ()


async def verify_asgi(
    guard: TokenGuard,
    scope: MutableMapping[str, Any],
    form_tokens: Sequence[str] = (),
    token_rules: AdapterOptions | None = None,
) -> RequestVerdict | None:
    """Verify an ASGI request; ``None`` when it carries no credentials.

    The verdict is kept in ``scope[VERDICT_KEY]`` for route requirements.

    Raises:
        TokenError: credentials present but refused.
    """
    try:
        context = asgi_request_context(scope, guard.trusted_proxies, form_tokens, token_rules)
        verdict: RequestVerdict | None = await verify_request(guard, context)
    except MissingToken:
        verdict = None
    scope[VERDICT_KEY] = verdict
    return verdict


def verify_wsgi(
    guard: TokenGuard,
    environ: MutableMapping[str, Any],
    query_tokens: Sequence[str] = (),
    form_tokens: Sequence[str] = (),
    token_rules: AdapterOptions | None = None,
) -> RequestVerdict | None:
    """Verify a WSGI request; ``None`` when it carries no credentials.

    The verdict is kept in ``environ[VERDICT_KEY]`` for route requirements.

    Raises:
        TokenError: credentials present but refused.
    """
    try:
        context = wsgi_request_context(environ, guard.trusted_proxies, query_tokens, form_tokens, token_rules)
        verdict: RequestVerdict | None = verify_request_sync(guard, context)
    except MissingToken:
        verdict = None
    environ[VERDICT_KEY] = verdict
    return verdict
