"""S1-S3 with small counts (full counts: `make chaos`): SIGTERM ends every service within its budget
after nats-server was killed, the database was killed, or NATS fell silent."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos import shutdown
from chaos.infra import Infra, slow_target

# Real service processes and killed servers: timing-sensitive on 2 shared cores, so `make chaos` only.
pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(300)]


@pytest.mark.parametrize("fault", ["nats killed", "database killed", "nats silent"])
async def test_sigterm_ends_within_the_budget(infra: Infra, tmp_path: Path, fault: shutdown.Fault) -> None:
    with slow_target(infra, tmp_path, delay_ms=100) as target:
        fig = await shutdown.stop_with_fault(infra, tmp_path, fault=fault, tests=8, target=target)
    print(fig.line())
    assert fig.ok, fig.line()
