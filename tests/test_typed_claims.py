"""Typed claims: a pydantic model or dataclass of the claims, validated once per verified token."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenguard import ConfigurationError, InvalidToken, TokenClaims, TokenGuard, typed_claims
from tokenguard.pytest_plugin import TokenFactory
from tokenguard.typed_claims import check_model, claims_as

VALIDATIONS: list[str] = []


class Counted(pydantic.BaseModel):
    """Counts its validations, to show they happen once per verified token."""

    sub: str
    tenant: str

    @pydantic.model_validator(mode="after")
    def count(self) -> Counted:
        VALIDATIONS.append(self.sub)
        return self


@dataclasses.dataclass(frozen=True)
class Profile:
    sub: str
    roles: tuple[str, ...] = ()


def claims(**values: Any) -> TokenClaims:
    return TokenClaims(values, token_type="custom")


def test_validated_once_per_verified_token(
    tokenguard_guard: Callable[..., TokenGuard], tokenguard_token: TokenFactory
) -> None:
    """The guard serves one cached TokenClaims per token; the model is validated once for it."""
    guard = tokenguard_guard(introspection=False)
    token = tokenguard_token("read", subject="once", extra_claims={"tenant": "t"})
    VALIDATIONS.clear()
    first = claims_as(guard.verify_sync(token), Counted)
    second = claims_as(guard.verify_sync(token), Counted)
    assert first is second and first.tenant == "t"
    assert VALIDATIONS == ["once"]
    other = tokenguard_token("read", subject="twice", extra_claims={"tenant": "t"})
    claims_as(guard.verify_sync(other), Counted)
    assert VALIDATIONS == ["once", "twice"]


def test_dataclass_models_are_validated() -> None:
    """Dataclasses are validated (types coerced or refused), not merely constructed."""
    assert claims_as(claims(sub="a", roles=["x", "y"], other=1), Profile) == Profile("a", ("x", "y"))
    with pytest.raises(InvalidToken, match="do not fit"):
        claims_as(claims(sub=["not", "a", "string"]), Profile)
    with pytest.raises(InvalidToken):
        claims_as(claims(roles=[]), Profile)


def test_models_are_checked_at_configuration() -> None:
    """Anything but a pydantic model or dataclass is a ConfigurationError."""
    for bad in (dict, int, "Profile", Profile("a")):
        with pytest.raises(ConfigurationError, match="model"):
            check_model(bad)  # type: ignore[arg-type]
    check_model(Profile)
    check_model(Counted)


def test_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache of validated models keeps at most MAX_CACHED_MODELS entries."""
    monkeypatch.setattr(typed_claims, "MAX_CACHED_MODELS", 3)
    kept = [claims(sub=f"s{i}") for i in range(10)]
    for each in kept:
        claims_as(each, Profile)
    assert len(typed_claims._cache) <= 3
    assert claims_as(kept[-1], Profile).sub == "s9"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=200)
@given(st.dictionaries(st.sampled_from(["sub", "roles", "tenant", "x"]), json_values, max_size=4))
def test_any_claim_set_gives_a_model_or_invalid_token(raw: dict[str, Any]) -> None:
    """Property: for any JSON claim set, claims_as returns the model or raises InvalidToken, nothing else."""
    try:
        value = claims_as(claims(**raw), Profile)
    except InvalidToken:
        return
    assert isinstance(value, Profile) and isinstance(value.sub, str)
