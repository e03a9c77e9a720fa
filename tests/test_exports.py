"""The public API: one front door, sorted, complete, typed."""

from __future__ import annotations

from pathlib import Path

import tokenguard


def test_all_is_sorted_and_complete() -> None:
    """__all__ is sorted and every name resolves, with the tokenguard module name."""
    assert tokenguard.__all__ == sorted(tokenguard.__all__)
    for name in tokenguard.__all__:
        obj = getattr(tokenguard, name)
        if isinstance(obj, type):
            assert obj.__module__ == "tokenguard", name


def test_import_does_not_pull_frameworks() -> None:
    """import tokenguard imports no web framework."""
    import subprocess
    import sys

    code = (
        "import sys, tokenguard; print(any(m in sys.modules for m in ('fastapi', 'flask', 'starlette.applications')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_py_typed_ships() -> None:
    """The package carries py.typed."""
    assert (Path(tokenguard.__file__).parent / "py.typed").exists()
