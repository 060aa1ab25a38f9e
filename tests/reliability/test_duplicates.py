"""A2: every event type re-published with its own id, inside and after the duplicate window."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.duplicates import duplicate_events
from chaos.infra import Infra

pytestmark = pytest.mark.integration


async def test_duplicates_change_nothing(infra: Infra, tmp_path: Path) -> None:
    fig = await duplicate_events(infra, tmp_path)
    print(fig.line())
    assert fig.ok, fig.line()
