"""Typed claims: the claims an application expects, as a pydantic model or dataclass.

::

    class AppClaims(pydantic.BaseModel):
        sub: str
        tenant: str
        roles: list[str] = []

    claims = guard.verify_sync(token)
    app_claims = claims_as(claims, AppClaims)          # validated once per token

    # FastAPI: the dependency value is an AppClaims
    @app.get("/me")
    async def me(claims: AppClaims = Security(guard.requires("read").model(AppClaims))): ...

Why: routes otherwise read ``claims["tenant"]`` and each one decides what a
missing or mistyped claim means. With a model, the shape is declared once and
checked once per verified token: the guard caches a verified token's
:class:`~tokenguard.TokenClaims` object and serves the same object for every
request with that token, and the validated model is cached beside it, keyed by
that object's identity. A token whose claims do not fit is refused with 401
``invalid_token`` (RFC 6750 §3.1: "invalid for other reasons"), and the
reason is logged (escaped, without claim values), never sent to the client.

Validation uses pydantic (``pip install tokenguard[typed]``; FastAPI installs
it anyway); dataclasses are validated through pydantic as well.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from typing import Any, TypeVar

from ._logtext import loggable
from .claims import TokenClaims
from .errors import ConfigurationError, InvalidToken

__all__ = ["MAX_CACHED_MODELS", "check_model", "claims_as"]

logger = logging.getLogger("tokenguard.typed_claims")

M = TypeVar("M")

#: Validated models kept, most recently used first. Each entry holds its
#: TokenClaims, so the identity key stays valid while the entry lives; sized
#: like a guard's local cache of verified tokens.
MAX_CACHED_MODELS = 10_000

_cache: OrderedDict[tuple[int, int], tuple[TokenClaims, Any]] = OrderedDict()
_lock = threading.Lock()
_adapters: dict[type[Any], Any] = {}


def check_model(model: type[Any]) -> None:
    """Refuse at configuration time anything that is not a pydantic model or a dataclass.

    Raises:
        ConfigurationError: ``model`` cannot validate claims, or pydantic is missing.
    """
    if not isinstance(model, type):
        raise ConfigurationError(f"model must be a pydantic model or dataclass class, got {model!r}")
    _adapter(model)


def _adapter(model: type[Any]) -> Any:
    adapter = _adapters.get(model)
    if adapter is not None:
        return adapter
    try:
        import pydantic
    except ImportError as exc:  # pragma: no cover - FastAPI and the extra install it
        raise ConfigurationError("typed claims need pydantic: pip install 'tokenguard[typed]'") from exc
    if (isinstance(model, type) and issubclass(model, pydantic.BaseModel)) or dataclasses.is_dataclass(model):
        adapter = pydantic.TypeAdapter(model)
    else:
        raise ConfigurationError(f"model must be a pydantic model or dataclass, got {model.__qualname__}")
    _adapters[model] = adapter
    return adapter


def claims_as(claims: TokenClaims, model: type[M]) -> M:
    """``claims`` validated as ``model``, once per verified token.

    The raw claims (``claims.to_dict()``) are validated; for a pydantic model,
    its own configuration decides whether unknown claims are ignored
    (pydantic's default) or refused.

    Args:
        claims: the verified claims (from the guard).
        model: a pydantic ``BaseModel`` subclass or a dataclass.

    Returns:
        The model instance; the same instance for every call with the same
        ``claims`` object, so treat it as read-only (a frozen model or
        dataclass makes that explicit).

    Raises:
        InvalidToken: the claims do not fit the model (401 ``invalid_token``).
        ConfigurationError: ``model`` is not a pydantic model or dataclass.
    """
    key = (id(claims), id(model))
    with _lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] is claims:
            _cache.move_to_end(key)
            return hit[1]  # type: ignore[no-any-return]  # stored for this model
    adapter = _adapter(model)
    try:
        import pydantic

        value = adapter.validate_python(claims.to_dict())
    except pydantic.ValidationError as exc:
        # Claim values may be personal data: log where and what kind, not the values.
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['type']}" for e in exc.errors()[:5])
        logger.warning(
            "token claims do not fit %s (issuer %s): %s",
            model.__qualname__,
            loggable(claims.issuer or "-"),
            loggable(problems),
        )
        raise InvalidToken("the token's claims do not fit what this API expects") from None
    with _lock:
        _cache[key] = (claims, value)
        _cache.move_to_end(key)
        while len(_cache) > MAX_CACHED_MODELS:
            _cache.popitem(last=False)
    return value  # type: ignore[no-any-return]  # validated as model
