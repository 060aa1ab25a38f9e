"""A1, A3, A4, A9 with small counts (full counts: `make chaos`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos import delivery
from chaos.infra import Infra, slow_target
from mailwarden_servers import MongoWireServer

# The scenarios wait up to ~2 min before they report why (their own message beats a bare timeout).
# Fault scenarios with real processes and outages: timing-sensitive on 2 shared cores, so they run in
# `make chaos` (with `make chaos`'s full-size scripts), not in `make test`.
pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(240)]


async def test_killed_testers_lose_and_duplicate_nothing(infra: Infra, tmp_path: Path) -> None:
    with slow_target(infra, tmp_path, delay_ms=40) as target:
        fig = await delivery.kill_testers(infra, tmp_path, tests=40, kills=2, testers=2, target=target)
    print(fig.line())
    assert fig.ok, fig.line()


async def test_nats_restarts_lose_nothing(infra: Infra, tmp_path: Path) -> None:
    fig = await delivery.nats_restarts(infra, tmp_path, tests=60)
    print(fig.line())
    assert fig.ok, fig.line()


@pytest.fixture
def own_database(infra: Infra, tmp_path: Path) -> Iterator[Infra]:
    """A MongoDB-wire server of the test's own: the scenario stops it."""
    with MongoWireServer(tmp_path / "mongo") as mongo:
        yield Infra(infra.workdir, infra.certs, mongo.uri, infra.dovecot, infra.smtp_starttls_port, mongo)


async def test_database_outage_loses_nothing(own_database: Infra, tmp_path: Path) -> None:
    fig = await delivery.database_outage(own_database, tmp_path, tests=40, outage_s=5)
    print(fig.line())
    assert fig.ok, fig.line()


async def test_database_outage_while_the_job_expands_loses_nothing(
    own_database: Infra, tmp_path: Path
) -> None:
    # Batches of 5: the job has mailboxes left to request when the database goes (as at full size).
    fig = await delivery.database_outage(own_database, tmp_path, tests=60, outage_s=20, job_batch=5)
    print(fig.line())
    assert fig.ok, fig.line()


async def test_sigterm_drains_tests_in_flight(infra: Infra, tmp_path: Path) -> None:
    with slow_target(infra, tmp_path, delay_ms=100) as target:
        fig = await delivery.sigterm_in_flight(infra, tmp_path, tests=12, target=target, grace_s=25)
    print(fig.line())
    assert fig.ok, fig.line()
