"""The client side: tokens this service *sends* to the APIs it calls.

* :class:`ClientCredentialsAuth`: an ``httpx.Auth`` for OAuth 2.0 token
  endpoints (client credentials, refresh tokens, RFC 7009 revocation).
* :class:`AuthorizationCodeAuth`: the same after an authorization-code
  exchange (with PKCE), as IBM Liberty documents.
* :class:`DianClient` / :class:`AsyncDianClient` / :class:`DianAuth`: the
  DIAN identity service.
"""

from .dian import (
    DIAN_PRODUCTION,
    DIAN_TEST,
    AsyncDianClient,
    DianAuth,
    DianClient,
    DianError,
    DianToken,
    decrypt_field,
    encrypt_field,
)
from .oauth import AuthorizationCodeAuth, ClientCredentialsAuth, pkce_pair
from .tokens import (
    AccessToken,
    InvalidClient,
    InvalidGrant,
    TokenEndpointError,
    TokenEndpointUnreachable,
    parse_token_response,
)

__all__ = [
    "DIAN_PRODUCTION",
    "DIAN_TEST",
    "AccessToken",
    "AsyncDianClient",
    "AuthorizationCodeAuth",
    "ClientCredentialsAuth",
    "DianAuth",
    "DianClient",
    "DianError",
    "DianToken",
    "InvalidClient",
    "InvalidGrant",
    "TokenEndpointError",
    "TokenEndpointUnreachable",
    "decrypt_field",
    "encrypt_field",
    "parse_token_response",
    "pkce_pair",
]
