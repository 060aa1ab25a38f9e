"""The tester takes the allowed ports from its own view of the org settings, not from the request."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from fastapi import FastAPI

from contracts.envelope import make_envelope
from contracts.events import EmailSettingsChanged, SettingsSnapshot
from mailwarden_mailnet.resolve import StaticResolver
from mailwarden_runtime.bus import ensure_streams
from mailwarden_servers import NatsServer, TestCertificates
from tester_svc.app import create_app
from tester_svc.runner import Runner

from .conftest import NAMES, settings_for

pytestmark = pytest.mark.integration


async def _announce(nats_url: str, version: int, ports: list[int]) -> None:
    nc = await nats.connect(nats_url)
    try:
        settings = SettingsSnapshot(version=version, allowed_ports=ports)
        env = make_envelope(EmailSettingsChanged(settings=settings), "profile-svc")
        await nc.jetstream().publish(EmailSettingsChanged.SUBJECT, env.to_bytes())
    finally:
        await nc.close()


@pytest.fixture
def private_nats(workdir: Path) -> Iterator[NatsServer]:
    """A NATS of this test alone: its MW_CONFIG holds only the settings announced here."""
    with NatsServer(workdir / f"nats-orgports-{uuid.uuid4().hex[:8]}") as server:
        yield server


@pytest.fixture
async def app(private_nats: NatsServer, certs: TestCertificates) -> AsyncIterator[FastAPI]:
    settings = settings_for(certs, nats_url=private_nats.url)
    nc = await nats.connect(private_nats.url)
    await ensure_streams(nc, settings)
    await nc.close()
    await _announce(private_nats.url, 3, [993, 587])  # kept in MW_CONFIG before the tester starts
    application = create_app(settings, resolver=StaticResolver(NAMES))
    async with application.router.lifespan_context(application):
        yield application


async def test_the_request_cannot_widen_the_org_s_ports(app: FastAPI, private_nats: NatsServer) -> None:
    runner: Runner = app.state.runner
    wide = list(range(1, 65536))
    for _ in range(100):
        if runner.allowed_ports(wide) == [993, 587]:
            break
        await asyncio.sleep(0.05)
    assert runner.allowed_ports(wide) == [993, 587]  # the last settings kept, not the request's
    await _announce(private_nats.url, 4, [993, 465])
    for _ in range(100):
        if runner.allowed_ports(wide) == [993, 465]:
            break
        await asyncio.sleep(0.05)
    assert runner.allowed_ports(wide) == [993, 465]
    await _announce(private_nats.url, 2, [25])  # an older version arriving late changes nothing
    await asyncio.sleep(0.3)
    assert runner.allowed_ports([25]) == [993, 465]
