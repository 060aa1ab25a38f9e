"""sender-svc fixtures: the app on a private NATS server, its own database, a real aiosmtpd with
TLS + AUTH (SIZE limit, SMTPUTF8), helpers that publish what the other services would, and a
login desk answering mailbox-svc's ``login`` operation."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from fastapi import FastAPI
from nats.aio.client import Client
from nats.aio.msg import Msg

from mailwarden_mailnet.login_desk import LoginDesk
from mailwarden_mailnet.resolve import StaticResolver
from mailwarden_runtime.auth import bearer_header
from mailwarden_runtime.auth.bootstrap import issue_token
from mailwarden_servers import NatsServer, SmtpServer, TestCertificates
from sender_svc.app import create_app
from sender_svc.config import Settings
from sender_svc.submit import sendable

sys.path.insert(0, str(Path(__file__).parent))
from sender_helpers import NAMES, TRANSIT, Recorder, enter_login, envelope_of, eventually, setup_events

SIZE_LIMIT = 200_000
Seed = Callable[..., Awaitable[None]]


@pytest.fixture(scope="module")
def smtp(certs: TestCertificates, mail_users: dict[str, str]) -> Iterator[SmtpServer]:
    """Our own aiosmtpd (SIZE limit, SMTPUTF8, PIPELINING): STARTTLS, implicit TLS and plain ports."""
    with SmtpServer(
        certs, mail_users, plain=True, data_size_limit=SIZE_LIMIT, smtputf8=True, pipelining=True
    ) as server:
        yield server


@pytest.fixture
def smtp_clean(smtp: SmtpServer) -> Iterator[SmtpServer]:
    smtp.clear()
    yield smtp
    smtp.clear()


def sender_settings(nats_url: str, mongo_uri: str, db: str, certs: TestCertificates, **over: Any) -> Settings:
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "mongodb_uri": mongo_uri,
        "mongodb_db": db,
        "dev_mode": True,
        "log_setup": False,
        "sender_allow_networks": "127.0.0.0/8",
        "sender_ca_file": str(certs.ca),
        "sender_backoff_s": 0.2,
        "sender_poll_s": 0.05,
        "sender_sweep_s": 0.2,
        "sender_step_timeout_s": 3.0,
        "sender_data_timeout_s": 3.0,
        "sender_lease_s": 8.0,
        "sender_concurrency": 4,
    }
    values.update(over)
    return Settings(**values)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sender_settings(**values): settings of the sender under test")


@pytest.fixture
def settings(
    request: pytest.FixtureRequest, private_nats: NatsServer, mongo_uri: str, certs: TestCertificates
) -> Settings:
    marker = request.node.get_closest_marker("sender_settings")
    over = marker.kwargs if marker else {}
    return sender_settings(private_nats.url, mongo_uri, "t_" + uuid.uuid4().hex[:12], certs, **over)


@pytest.fixture
async def nc(private_nats: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(private_nats.url)
    yield client
    await client.drain()


@pytest.fixture
async def events(nc: Client) -> Recorder:
    recorder = Recorder()

    async def on_msg(msg: Msg) -> None:
        recorder.add(msg)

    await nc.subscribe("mailwarden.send.>", cb=on_msg)
    await nc.flush()
    return recorder


@pytest.fixture
async def desk(nc: Client) -> LoginDesk:
    """mailbox-svc's ``login`` operation for these tests (the app's dev transit ring)."""
    login_desk = LoginDesk(TRANSIT)
    await login_desk.serve(nc)
    await nc.flush()
    return login_desk


@pytest.fixture
async def app(settings: Settings, events: Recorder, desk: LoginDesk) -> AsyncIterator[FastAPI]:
    application = create_app(settings, resolver=StaticResolver(NAMES))
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    headers = bearer_header(await issue_token(settings.nats_url))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc", headers=headers) as c:
        yield c


@pytest.fixture
def seed(app: FastAPI, smtp_clean: SmtpServer, desk: LoginDesk) -> Seed:
    """Publish a mailbox's profile, settings and status on the bus, give the login desk its login;
    wait until the sender knows it (``ready=False`` for a mailbox that is not meant to be able to send)."""

    async def run(mailbox_id: str, *, ready: bool = True, **kw: Any) -> None:
        kw.setdefault("port", smtp_clean.port_starttls)
        ports = [p for p in (smtp_clean.port_starttls, smtp_clean.port_tls, smtp_clean.port_plain) if p]
        kw.setdefault("allowed_ports", ports)
        runtime = app.state.runtime
        enter_login(desk, mailbox_id, **kw)
        for event in setup_events(mailbox_id, **kw):
            await runtime.publish(envelope_of(event))
        read = app.state.stores.read
        if ready:
            await eventually(lambda: sendable(read, mailbox_id))
        else:
            await eventually(lambda: _has_all(read, mailbox_id))

    return run


async def _has_all(read: Any, mailbox_id: str) -> bool:
    view = await read.mailbox(mailbox_id)
    return bool(
        view and view.snapshot and "status_at" in (await read.mailboxes.find_one({"_id": mailbox_id}))
    )
