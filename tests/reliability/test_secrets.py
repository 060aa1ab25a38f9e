"""D1: a canary password through create, success, failures, dead letter and rotation never appears."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.infra import Infra
from chaos.secrets import canary
from mailwarden_servers import SmtpServer

pytestmark = pytest.mark.integration


async def test_canary_password_appears_nowhere(infra: Infra, tmp_path: Path, smtp_server: SmtpServer) -> None:
    fig = await canary(infra, tmp_path, smtp_server)
    print(fig.line())
    assert fig.ok, fig.line()
