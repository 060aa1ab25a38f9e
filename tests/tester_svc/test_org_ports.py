"""The tester takes the allowed ports from its own view of the org settings, never from the request:
the settings events, or profile-svc's answer when it has seen none."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from fastapi import FastAPI

from contracts.envelope import make_envelope
from contracts.events import DEFAULT_ALLOWED_PORTS, EmailSettingsChanged, SettingsSnapshot
from contracts.models import Endpoint, TlsMode
from mailwarden_mailnet.resolve import StaticResolver
from mailwarden_runtime.bus import ensure_streams
from mailwarden_servers import NatsServer, TestCertificates
from profile_svc.app import create_app as create_profile_app
from profile_svc.config import ProfileSettings
from tester_svc.app import create_app
from tester_svc.handlers import TestRequestedHandler
from tester_svc.orgview import OrgPorts, SettingsUnknown
from tester_svc.runner import Runner

from .conftest import NAMES, make_request, settings_for

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


async def test_without_settings_it_asks_profile_svc_never_the_request(
    private_nats: NatsServer, certs: TestCertificates, mongo_uri: str
) -> None:
    """No settings event kept: no port is allowed and no test runs until profile-svc tells them."""
    settings = settings_for(certs, nats_url=private_nats.url)
    tester = create_app(settings, resolver=StaticResolver(NAMES))
    async with tester.router.lifespan_context(tester):
        runner: Runner = tester.state.runner
        org: OrgPorts = tester.state.org_ports
        wide = list(range(1, 65536))
        assert runner.allowed_ports(wide) == []  # fail closed, not the request's list
        with pytest.raises(SettingsUnknown):  # nobody answers for profile-svc yet
            await org.ready()
        published: list[object] = []

        async def publish(envelope: object) -> None:
            published.append(envelope)

        handler = TestRequestedHandler(runner, publish, "tester-svc", org=org)
        with pytest.raises(SettingsUnknown):  # the consumer gives the request back for later
            await handler(
                make_envelope(
                    make_request(
                        incoming=Endpoint(host="mail.test", port=993, tls=TlsMode.IMPLICIT),
                        allowed_ports=wide,
                    ),
                    "mailbox-svc",
                )
            )
        assert published == []

        profile = create_profile_app(
            ProfileSettings(
                nats_url=private_nats.url,
                mongodb_uri=mongo_uri,
                mongodb_db="t_" + uuid.uuid4().hex[:12],
                dev_mode=True,
                log_setup=False,
            )
        )
        async with profile.router.lifespan_context(profile):
            asked = OrgPorts(org.ask)  # a view that saw no event: it must ask, with its service token
            await asked.ready()
            assert asked.allowed(wide) == list(DEFAULT_ALLOWED_PORTS)
            for _ in range(100):  # the running tester's own view follows (event or question)
                if runner.allowed_ports(wide) == list(DEFAULT_ALLOWED_PORTS):
                    break
                await asyncio.sleep(0.05)
            assert runner.allowed_ports(wide) == list(DEFAULT_ALLOWED_PORTS)
