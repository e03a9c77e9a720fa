"""OIDC UserInfo (OpenID Connect Core §5.3): interpreting the answer.

No I/O, no framework imports, no clock reads.

The request is a GET with the access token as Bearer credentials, to the
``userinfo_endpoint`` of the *configured* issuer that verified the token.
OIDC Core §5.3.4: the answer's ``sub`` must equal the token's ``sub``,
otherwise the answer must not be used (token substitution).
"""

from __future__ import annotations

from ._http import HttpReply, json_object
from .claims import TokenClaims
from .errors import InvalidToken, ServiceUnavailable

__all__ = ["interpret_userinfo"]


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
