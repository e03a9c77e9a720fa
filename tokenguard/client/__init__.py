"""The client side: tokens this service *sends* to the APIs it calls.

* :class:`ClientCredentialsAuth`: an ``httpx.Auth`` for OAuth 2.0 token
  endpoints (client credentials, refresh tokens, RFC 7009 revocation).
* :class:`DianClient` / :class:`DianAuth`: the DIAN identity service.
"""

from .dian import DIAN_PRODUCTION, DIAN_TEST, DianAuth, DianClient, DianError, DianToken, decrypt_field, encrypt_field
from .oauth import ClientCredentialsAuth
from .tokens import AccessToken, InvalidClient, InvalidGrant, TokenEndpointError, parse_token_response

__all__ = [
    "DIAN_PRODUCTION",
    "DIAN_TEST",
    "AccessToken",
    "ClientCredentialsAuth",
    "DianAuth",
    "DianClient",
    "DianError",
    "DianToken",
    "InvalidClient",
    "InvalidGrant",
    "TokenEndpointError",
    "decrypt_field",
    "encrypt_field",
    "parse_token_response",
]
