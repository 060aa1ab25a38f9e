"""Fixtures for the docs tests: the generator (a plain script in tools/) and one generation per run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# tools/gendocs.py is a script, not a package, and the suite runs with --import-mode=importlib.
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(Path(__file__).parent))

import gendocs  # noqa: E402


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The docs as the code produces them now, written to a fresh folder."""
    out = tmp_path_factory.mktemp("docs")
    gendocs.write(out, gendocs.generate(ROOT))
    return out
