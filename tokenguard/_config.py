"""Checks on configuration values, shared by every constructor.

No I/O. A bare ``str`` where a sequence of strings is expected is the classic
missing-comma mistake (``("/health")`` is a ``str``): iterated, it yields its
characters, so ``algorithms="RS256"`` would become ``{'R', 'S', '2', '5', '6'}``
and ``public_paths="/health"`` would make ``/`` public. Every option that takes
a sequence passes through :func:`string_tuple`, which refuses it naming the
option as the user wrote it.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import ConfigurationError

__all__ = ["parse_bool", "string_tuple"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def string_tuple(value: object, option: str) -> tuple[str, ...]:
    """``value`` as a tuple of strings, refusing a bare ``str``/``bytes`` and non-string items.

    Raises:
        ConfigurationError: ``value`` is a string, not iterable, or holds a
            non-string; the message names ``option``.
    """
    if isinstance(value, str | bytes):
        raise ConfigurationError(
            f"{option} must be a sequence of strings, not the single string {value!r}"
            f" (write ({value!r},) or [{value!r}])"
        )
    if not isinstance(value, Iterable):
        raise ConfigurationError(f"{option} must be a sequence of strings, not {type(value).__name__}")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str):
            raise ConfigurationError(f"{option} must hold strings only; found {type(item).__name__} {item!r}")
    return items


def parse_bool(value: object, option: str) -> bool:
    """A boolean setting from a ``bool``, ``0``/``1`` or a string such as ``"false"`` or ``"yes"``.

    Configuration loaded from the environment arrives as text, and
    ``bool("false")`` is ``True``: strings are parsed, and anything unknown is
    an error rather than a guess.

    Raises:
        ConfigurationError: neither a boolean nor one of ``1/0, true/false,
            yes/no, on/off`` (any case); the message names ``option``.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ConfigurationError(f"{option} must be a boolean (true/false, 1/0, yes/no, on/off), not {value!r}")
