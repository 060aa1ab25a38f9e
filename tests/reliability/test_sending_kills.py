"""A10 with one round (full: `make chaos`): kill -9 sender-svc at each point of a send; the mail
reaches the server at most once, and once exactly unless it was handed over before the kill
(then `EmailSendUncertain`); JetStream keeps one outcome."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos import sending
from chaos.infra import Infra

# Real service processes killed and restarted: timing-sensitive on 2 shared cores, so `make chaos` only.
pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(400)]


async def test_kill_at_each_point_of_a_send_never_sends_twice(infra: Infra, tmp_path: Path) -> None:
    fig = await sending.kill_at_each_point(infra, tmp_path, rounds=1)
    print(fig.line())
    assert fig.ok, fig.line()
