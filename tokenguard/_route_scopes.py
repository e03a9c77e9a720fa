"""The scopes a guard's routes require, checked against what each issuer can grant.

A scope absent from an issuer's ``scopes_supported`` can never be granted, so
a route requiring it answers 403 to everyone: a typo that no test with a
hand-made token catches. The guard's routes declare their scopes here
(``TokenGuard.requires()``, ``TokenGuard.declare_scopes()``); each issuer's
metadata is checked when it is first loaded, and again for scopes declared
after that. No I/O: the check reads documents the sources already hold, and
:func:`~tokenguard.diagnostics.check_route_scopes` logs one WARNING per scope.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from . import diagnostics
from .scopes import ScopeRequirement
from .sources import MetadataSource

__all__ = ["RouteScopes"]


class RouteScopes:
    """The scopes routes declared, checked against each issuer's metadata.

    Args:
        metadata: the guard's metadata sources, by issuer; each is told to
            check the declared scopes when its document first loads.
    """

    __slots__ = ("_declared", "_metadata")

    def __init__(self, metadata: Mapping[str, MetadataSource]) -> None:
        self._declared: set[str] = set()
        self._metadata = metadata
        for source in metadata.values():
            source.on_first_load = partial(self._check, source.issuer)

    @property
    def declared(self) -> frozenset[str]:
        """Every scope declared so far."""
        return frozenset(self._declared)

    def declare(self, scopes: tuple[str, ...]) -> None:
        """Add ``scopes``, checking the new ones against every issuer metadata already loaded.

        Raises:
            ConfigurationError: a scope is not a valid scope name (RFC 6749
                §3.3), checked before anything is declared.
        """
        ScopeRequirement(scopes)  # validates the names: a list or a bad name is refused here
        new = set(scopes) - self._declared
        if not new:
            return
        self._declared.update(new)
        for source in self._metadata.values():
            if source.state.value is not None:
                diagnostics.check_route_scopes(source.issuer, new, source.state.value)

    def _check(self, issuer: str, document: dict[str, Any]) -> None:
        diagnostics.check_route_scopes(issuer, self._declared, document)
