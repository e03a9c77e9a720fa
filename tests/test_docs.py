"""The documentation site builds with warnings as errors, API reference included."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import in_ci

ROOT = Path(__file__).resolve().parent.parent


def test_docs_build_strict(tmp_path: Path) -> None:
    """``mkdocs build --strict`` succeeds, and every page the site promises is there."""
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    if mkdocs is None:
        if in_ci():
            pytest.fail("mkdocs is missing: pip install -e '.[docs]'")
        pytest.skip("mkdocs is not installed (the docs extra)")
    result = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for page in (
        "quickstart",
        "configuration",
        "providers",
        "testing",
        "operations",
        "security",
        "performance",
        "troubleshooting",
        "reference",
    ):
        assert (tmp_path / "site" / page / "index.html").exists(), page
    reference = (tmp_path / "site" / "reference" / "index.html").read_text()
    assert "check_sync" in reference and "ReadinessReport" in reference


def test_every_docs_page_is_in_the_navigation() -> None:
    """A page under docs/ that the site's navigation does not list is a page nobody finds."""
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md"))
    missing = [page for page in pages if page not in nav]
    assert not missing, f"not in mkdocs.yml nav: {missing}"


def test_testing_page_example_passes(tmp_path: Path) -> None:
    """The test suite shown on docs/testing.md runs and passes as written."""
    page = (ROOT / "docs" / "testing.md").read_text()
    section = page.split("## Without the plugin", 1)[1]
    code = section.split("```python\n", 1)[1].split("```\n", 1)[0]
    example = tmp_path / "test_docs_example.py"
    example.write_text(code)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(example)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "3 passed" in result.stdout
