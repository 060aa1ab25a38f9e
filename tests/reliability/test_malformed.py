"""A5 with one round of every malformed kind per subject (full count: `make chaos`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.infra import Infra
from chaos.malformed import malformed_messages

pytestmark = pytest.mark.integration


async def test_malformed_messages_are_dead_lettered_once_and_valid_ones_handled(
    infra: Infra, tmp_path: Path
) -> None:
    fig = await malformed_messages(infra, tmp_path, rounds=6)
    print(fig.line())
    assert fig.ok, fig.line()
