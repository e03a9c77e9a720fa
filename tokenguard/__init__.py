"""tokenguard: protect HTTP APIs with OAuth 2.0 / OpenID Connect Bearer tokens.

Framework adapters live in their own modules (``tokenguard.starlette``,
``tokenguard.fastapi``, ``tokenguard.flask``, ``tokenguard.wsgi``) so that
``import tokenguard`` never imports a web framework.
"""

from .bearer import DEFAULT_MAX_TOKEN_BYTES, extract_token, parse_authorization
from .breaker import BreakerSettings
from .cache import CacheBackend, CachedResult, MemoryCache
from .cachecontrol import CacheControl
from .challenge import Challenge, parse_challenges
from .claims import TokenClaims
from .dpop import DPoPSettings, InvalidDPoPProof, UseDPoPNonce
from .errors import (
    ConfigurationError,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    MissingToken,
    ServiceUnavailable,
    TokenError,
)
from .forwarded import TrustedProxies
from .guard import ErrorResponse, TokenGuard
from .introspection import Introspection
from .issuer import JWTIssuer
from .jwt import DEFAULT_LEEWAY
from .keys import VerificationKey
from .limits import IntrospectionLimits
from .metrics import MetricsSnapshot
from .mtls import MTLSSettings
from .nonce import DPoPNonces
from .readiness import NotReady, ReadinessCheck, ReadinessReport
from .redis_cache import RedisCache
from .replay import MemoryReplayStore, RedisReplayStore, ReplayStore
from .request_auth import RequestContext, RequestVerdict, verify_request, verify_request_sync
from .resource_metadata import ProtectedResourceMetadata
from .scopes import ScopeRequirement, format_scope, parse_scope
from .shared import SharedStore
from .sources import DEFAULT_KID_REFETCH_COOLDOWN, FetchSettings
from .stepup import InsufficientUserAuthentication

__all__ = [
    "BreakerSettings",
    "CacheBackend",
    "CacheControl",
    "CachedResult",
    "Challenge",
    "ConfigurationError",
    "DEFAULT_KID_REFETCH_COOLDOWN",
    "DEFAULT_LEEWAY",
    "DEFAULT_MAX_TOKEN_BYTES",
    "DPoPNonces",
    "DPoPSettings",
    "ErrorResponse",
    "FetchSettings",
    "InsufficientScope",
    "InsufficientUserAuthentication",
    "Introspection",
    "IntrospectionLimits",
    "InvalidDPoPProof",
    "InvalidRequest",
    "InvalidToken",
    "JWTIssuer",
    "MTLSSettings",
    "MemoryCache",
    "MemoryReplayStore",
    "MetricsSnapshot",
    "MissingToken",
    "NotReady",
    "ProtectedResourceMetadata",
    "ReadinessCheck",
    "ReadinessReport",
    "RedisCache",
    "RedisReplayStore",
    "ReplayStore",
    "RequestContext",
    "RequestVerdict",
    "ScopeRequirement",
    "ServiceUnavailable",
    "SharedStore",
    "TokenClaims",
    "TokenError",
    "TokenGuard",
    "TrustedProxies",
    "UseDPoPNonce",
    "VerificationKey",
    "extract_token",
    "format_scope",
    "parse_authorization",
    "parse_challenges",
    "parse_scope",
    "verify_request",
    "verify_request_sync",
]

__version__ = "0.1.0"

for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = "tokenguard"
del _name, _obj
