"""``Cache-Control`` (RFC 9111 §5.2), parsed into typed fields, and TTL decisions.

No I/O, no framework imports, no clock reads.

Used in both directions: to honour ``max-age`` on the discovery and JWKS
documents we fetch, and to rewrite what protected routes send back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._abnf import OWS, QUOTED_CONTENT, TOKEN

__all__ = ["CacheControl", "document_ttl"]

# cache-directive = token [ "=" ( token / quoted-string ) ]   (RFC 9111 §5.2); the
# unquoted argument is read leniently (up to a comma or space), as caches do.
_DIRECTIVE = re.compile(rf"{OWS}({TOKEN}){OWS}(?:={OWS}(?:{QUOTED_CONTENT}|([^,\s]*)))?{OWS}")


def _delta_seconds(value: str | None) -> int | None:
    # RFC 9111 §1.2.2: delta-seconds = 1*DIGIT; larger than 2**31 means 2**31.
    if value is None or not value.isascii() or not value.isdigit():
        return None
    return min(int(value), 2**31)


@dataclass(frozen=True, slots=True)
class CacheControl:
    """The directives of one ``Cache-Control`` field that tokenguard acts on.

    ``other`` keeps every other directive verbatim so :meth:`to_header` can
    write the field back without losing anything.
    """

    max_age: int | None = None
    s_maxage: int | None = None
    no_store: bool = False
    no_cache: bool = False
    private: bool = False
    public: bool = False
    other: tuple[str, ...] = ()

    @classmethod
    def from_header(cls, value: str | None) -> CacheControl:
        """Parse a field value; unknown or malformed directives are kept in ``other``.

        The reverse of :meth:`to_header`.
        """
        if not value:
            return cls()
        fields: dict[str, object] = {}
        other: list[str] = []
        for part in _split_directives(value):
            match = _DIRECTIVE.fullmatch(part)
            if match is None:
                if part.strip():
                    other.append(part.strip())
                continue
            name = match.group(1).lower()
            argument = match.group(2) if match.group(2) is not None else match.group(3)
            if name == "max-age" and "max_age" not in fields:
                seconds = _delta_seconds(argument)
                # RFC 9111 §4.2.1: an invalid max-age means the response is stale.
                fields["max_age"] = 0 if seconds is None else seconds
            elif name == "s-maxage" and "s_maxage" not in fields:
                fields["s_maxage"] = _delta_seconds(argument)
            elif name in ("no-store", "no-cache", "private", "public"):
                fields[name.replace("-", "_")] = True
            else:
                other.append(part.strip())
        return cls(**fields, other=tuple(other))  # type: ignore[arg-type]

    def to_header(self) -> str:
        """Render the directives as a field value (the reverse of :meth:`from_header`)."""
        parts: list[str] = []
        if self.public:
            parts.append("public")
        if self.private:
            parts.append("private")
        if self.no_store:
            parts.append("no-store")
        if self.no_cache:
            parts.append("no-cache")
        if self.max_age is not None:
            parts.append(f"max-age={self.max_age}")
        if self.s_maxage is not None:
            parts.append(f"s-maxage={self.s_maxage}")
        parts.extend(self.other)
        return ", ".join(parts)


def _split_directives(value: str) -> list[str]:
    # Split on commas outside quoted strings.
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def document_ttl(
    cache_control: str | None,
    age: str | None,
    *,
    default: float,
    minimum: float,
    maximum: float,
) -> float:
    """How long a fetched metadata or key document stays fresh, in seconds.

    Honours ``max-age`` less ``Age`` (RFC 9111 §4.2.1, §4.2.3), clamped to
    ``[minimum, maximum]``: an upstream ``no-store`` or ``max-age=0`` must not
    turn every request into a fetch, and a year-long ``max-age`` must not pin
    keys past a rotation. ``default`` applies when the upstream says nothing.
    """
    directives = CacheControl.from_header(cache_control)
    if directives.no_store or directives.no_cache:
        ttl = 0.0
    elif directives.max_age is not None:
        ttl = float(directives.max_age - (_delta_seconds(age) or 0))
    else:
        ttl = default
    return min(max(ttl, minimum), maximum)
