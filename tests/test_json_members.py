"""The JWS JSON parser: the standard library's answer, except that duplicate member names anywhere are refused."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenguard import InvalidToken
from tokenguard.jwt import _json_object

NAMES = st.sampled_from(["iss", "sub", "aud", "a", "b", "é", "\\", '"'])
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()


def _objects(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # Objects as lists of (name, value) pairs, so that names may repeat.
    return st.lists(children, max_size=4) | st.lists(st.tuples(NAMES, children), max_size=5).map(_Pairs)


class _Pairs(list[tuple[str, Any]]):
    """A JSON object written member by member (names may repeat)."""


VALUES = st.recursive(SCALARS, _objects, max_leaves=20)


def _text(value: Any) -> str:
    if isinstance(value, _Pairs):
        return "{" + ",".join(f"{json.dumps(name)}:{_text(item)}" for name, item in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_text(item) for item in value) + "]"
    return json.dumps(value)


def _has_duplicates(value: Any) -> bool:
    if isinstance(value, _Pairs):
        names = [name for name, _ in value]
        return len(set(names)) != len(names) or any(_has_duplicates(item) for _, item in value)
    if isinstance(value, list):
        return any(_has_duplicates(item) for item in value)
    return False


@given(st.lists(st.tuples(NAMES, VALUES), max_size=6).map(_Pairs), st.sampled_from(["", " ", "\n\t"]))
def test_objects_parse_as_json_does_unless_a_name_repeats(document: _Pairs, padding: str) -> None:
    text = padding + _text(document) + padding
    if _has_duplicates(document):
        with pytest.raises(InvalidToken):
            _json_object(text.encode(), "payload")
    else:
        assert _json_object(text.encode(), "payload") == json.loads(text)


@given(VALUES.filter(lambda value: not isinstance(value, _Pairs)))
def test_only_objects_are_accepted(value: Any) -> None:
    with pytest.raises(InvalidToken):
        _json_object(_text(value).encode(), "payload")
