"""Project Wycheproof JOSE vectors through tokenguard's signature path.

Every JSON Web Signature case: ``invalid`` must be rejected, ``valid`` for an
algorithm we support must be accepted. The cases the vectors' README lists as
mislabelled upstream may go either way. JSON Web Key cases: every key must be
either refused at parse time or unable to verify anything forged.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tokenguard import InvalidToken
from tokenguard.jwt import verify_compact
from tokenguard.keys import SUPPORTED_ALGORITHMS, KeySet, parse_jwk, parse_jwks

from ..conftest import in_ci

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "testvectors" / "wycheproof"
# Known label problems upstream (see shared/testvectors/README.md).
EITHER_WAY = {346, 347, 350, 351, 357, 367, 370, 372, 373}


def _load(name: str) -> dict[str, Any]:
    path = VECTORS / name
    if not path.exists():
        if in_ci():
            pytest.fail(f"Wycheproof vectors missing at {path}")
        pytest.skip(f"Wycheproof vectors not found at {path}")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _cases(name: str) -> list[Any]:
    path = VECTORS / name
    if not path.exists():
        return [pytest.param(None, None, id="vectors-missing")]
    data = json.loads(path.read_text())
    return [
        pytest.param(group, test, id=f"tc{test['tcId']}-{test['comment']}")
        for group in data["testGroups"]
        for test in group["tests"]
    ]


def _keys(group: dict[str, Any]) -> KeySet | None:
    jwk = group.get("public") or group["private"]
    try:
        return KeySet.of([parse_jwk(jwk, allow_symmetric=True)])
    except ValueError:
        return None  # a key we refuse to use verifies nothing


def _accepts(group: dict[str, Any], test: dict[str, Any]) -> bool:
    keys = _keys(group)
    jws = test["jws"]
    if keys is None or not isinstance(jws, str):
        return False  # JWS JSON serialization is not an access-token format
    try:
        verify_compact(jws, keys, SUPPORTED_ALGORITHMS)
    except InvalidToken:
        return False
    return True


@pytest.mark.parametrize(("group", "test"), _cases("json_web_signature_test.json"))
def test_json_web_signature_vector(group: dict[str, Any] | None, test: dict[str, Any] | None) -> None:
    """Each Wycheproof JWS case gets the verdict its label demands."""
    if group is None or test is None:
        _load("json_web_signature_test.json")
        return
    accepted = _accepts(group, test)
    if test["tcId"] in EITHER_WAY or test["result"] == "acceptable":
        return
    if test["result"] == "invalid":
        assert not accepted, f"tcId {test['tcId']} ({test['comment']}) must be rejected"
    else:
        alg = json.loads(_b64(test["jws"].split(".")[0])).get("alg") if isinstance(test["jws"], str) else None
        if alg in SUPPORTED_ALGORITHMS:
            assert accepted, f"tcId {test['tcId']} ({test['comment']}) must be accepted"


def _b64(segment: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def test_signature_vector_tally() -> None:
    """Counts, for the record: every invalid case rejected, valid supported cases accepted."""
    data = _load("json_web_signature_test.json")
    tally: Counter[str] = Counter()
    for group in data["testGroups"]:
        for test in group["tests"]:
            accepted = _accepts(group, test)
            tally[f"{test['result']}-{'accepted' if accepted else 'rejected'}"] += 1
    print(dict(tally))
    assert tally["invalid-accepted"] <= sum(1 for tc in EITHER_WAY if tc in (367, 370))
    assert sum(tally.values()) == data["numberOfTests"]


def _key_set(material: dict[str, Any]) -> KeySet:
    if "keys" in material:
        # A key set as a user would configure it statically (the most lenient
        # case: symmetric keys allowed, but never mixed with public keys).
        keys, _ = parse_jwks(material, allow_symmetric=True)
        return keys
    try:
        return KeySet.of([parse_jwk(material, allow_symmetric=True)])
    except ValueError:
        return KeySet.of([])


@pytest.mark.parametrize(("group", "test"), _cases("json_web_key_test.json"))
def test_json_web_key_vector(group: dict[str, Any] | None, test: dict[str, Any] | None) -> None:
    """Each Wycheproof JWK case, checked against keys as tokenguard would load them from a JWKS."""
    if group is None or test is None:
        _load("json_web_key_test.json")
        return
    keys = _key_set(group.get("public") or group["private"])
    try:
        verify_compact(test["jws"], keys, SUPPORTED_ALGORITHMS)
        accepted = True
    except InvalidToken:
        accepted = False
    if test["result"] == "invalid":
        assert not accepted, f"JWK tcId {test['tcId']} ({test['comment']}) must be rejected"
    elif test["result"] == "valid":
        assert accepted, f"JWK tcId {test['tcId']} ({test['comment']}) must be accepted"
