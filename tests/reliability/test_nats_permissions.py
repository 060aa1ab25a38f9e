"""D4: the production NATS config (rendered from the Helm values) refuses what it must, allows the flow."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.infra import Infra
from chaos.permissions import flow_as_own_users, integration_and_audit, refusals

pytestmark = pytest.mark.integration


async def test_forbidden_publishes_and_subscriptions_are_refused(tmp_path: Path) -> None:
    fig = await refusals(tmp_path)
    print(fig.line())
    assert fig.ok, fig.line()


async def test_every_service_works_as_its_own_user(infra: Infra, tmp_path: Path) -> None:
    fig = await flow_as_own_users(infra, tmp_path)
    print(fig.line())
    assert fig.ok, fig.line()


async def test_an_integration_reads_and_answers_events_and_the_audit_reads_every_stream(
    tmp_path: Path,
) -> None:
    fig = await integration_and_audit(tmp_path)
    print(fig.line())
    assert fig.ok, fig.line()
