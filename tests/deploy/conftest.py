"""Fixtures for the deployment tests (compose file, Dockerfile, Kustomize renders; no network)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# The tests import their helpers as a plain module (the suite runs with --import-mode=importlib).
sys.path.insert(0, str(Path(__file__).parent))

from deploy_helpers import DEPLOY, Doc, kustomize


@pytest.fixture(scope="session")
def render() -> Callable[[str], list[Doc]]:
    cache: dict[str, list[Doc]] = {}

    def _render(rel: str) -> list[Doc]:
        if rel not in cache:
            cache[rel] = kustomize(DEPLOY / rel)
        return cache[rel]

    return _render
