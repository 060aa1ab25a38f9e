"""tester-svc in-process on a private nats-server: TestRequested in, TestCompleted out, over JetStream."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import nats
import pytest
from fastapi import FastAPI
from nats.aio.msg import Msg

from contracts.envelope import make_envelope, parse_envelope
from contracts.events import TestCompleted
from contracts.models import Endpoint, TlsMode
from contracts.models import TestStatus as Status
from contracts.subjects import TEST_COMPLETED, TEST_REQUESTED
from mailwarden_mailnet.resolve import StaticResolver
from mailwarden_runtime.auth import bearer_header
from mailwarden_runtime.auth.bootstrap import issue_token
from mailwarden_servers import DovecotServer, NatsServer, SmtpServer, TestCertificates
from tester_svc.app import create_app
from tester_svc.handlers import result_event_id

from . import fakes
from .conftest import NAMES, StartFake, announce_ports, make_request, settings_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def private_nats(workdir: Path) -> Iterator[NatsServer]:
    with NatsServer(workdir / f"nats-tester-{uuid.uuid4().hex[:6]}") as server:
        yield server


@pytest.fixture
async def app(private_nats: NatsServer, certs: TestCertificates) -> AsyncIterator[FastAPI]:
    settings = settings_for(certs, nats_url=private_nats.url, tester_concurrency=4)
    await announce_ports(settings)
    application = create_app(settings, resolver=StaticResolver(NAMES))
    async with application.router.lifespan_context(application):
        yield application


async def test_request_to_completed_over_jetstream(
    app: FastAPI, private_nats: NatsServer, dovecot: DovecotServer, smtp_server: SmtpServer
) -> None:
    req = make_request(
        incoming=Endpoint(host="mail.test", port=dovecot.imaps_port, tls=TlsMode.IMPLICIT),
        outgoing=Endpoint(host="mail.test", port=smtp_server.port_starttls, tls=TlsMode.STARTTLS),
        test_id=f"bus{uuid.uuid4().hex[:8]}",
    )
    nc = await nats.connect(private_nats.url)
    try:
        results: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_msg(msg: Msg) -> None:
            await results.put(msg.data)

        await nc.subscribe(TEST_COMPLETED, cb=on_msg)
        js = nc.jetstream()
        envelope = make_envelope(req, "pytest")
        await js.publish(TEST_REQUESTED, envelope.to_bytes(), headers={"Nats-Msg-Id": str(envelope.id)})
        raw = await asyncio.wait_for(results.get(), timeout=20)
        done = parse_envelope(raw, TestCompleted)
        assert done.id == result_event_id(req.test_id, req.attempt)
        assert done.correlation_id == envelope.correlation_id
        assert done.data.test_id == req.test_id
        assert done.data.incoming is not None and done.data.incoming.status is Status.SUCCESS
        assert done.data.outgoing is not None and done.data.outgoing.status is Status.SUCCESS
        assert b"alice-pw" not in raw

        # A redelivered request (same test, same attempt) is tested again, but its result is a
        # duplicate for JetStream: the stream keeps one TestCompleted.
        again = make_envelope(req, "pytest")
        await js.publish(TEST_REQUESTED, again.to_bytes(), headers={"Nats-Msg-Id": str(again.id)})
        await asyncio.wait_for(results.get(), timeout=20)  # core subscribers see every publish
        info = await js.stream_info("MW_TESTS", subjects_filter=TEST_COMPLETED)
        assert info.state.subjects == {TEST_COMPLETED: 1}
    finally:
        await nc.close()


async def test_slow_test_is_not_redelivered(
    private_nats: NatsServer, certs: TestCertificates, fake_server: StartFake
) -> None:
    """A test longer than the ack wait keeps its message with in-progress acks: one run, one result."""
    fake = await fake_server(fakes.imap(delay_s=0.3))  # ~2 s for the whole dialogue
    settings = settings_for(
        certs,
        nats_url=private_nats.url,
        tester_ack_wait_s=1.0,
        tester_concurrency=4,
        tester_step_timeout_s=2.0,
    )
    await announce_ports(settings)
    application = create_app(settings, resolver=StaticResolver(NAMES))
    req = make_request(
        incoming=Endpoint(host="mail.test", port=fake.port, tls=TlsMode.NONE),
        allow_plaintext_auth=True,
        test_id=f"slow{uuid.uuid4().hex[:8]}",
    )
    async with application.router.lifespan_context(application):
        nc = await nats.connect(private_nats.url)
        try:
            sub = await nc.subscribe(TEST_COMPLETED)
            envelope = make_envelope(req, "pytest")
            await nc.jetstream().publish(
                TEST_REQUESTED, envelope.to_bytes(), headers={"Nats-Msg-Id": str(envelope.id)}
            )
            while True:
                msg = await sub.next_msg(timeout=20)
                done = parse_envelope(msg.data, TestCompleted)
                if done.data.test_id == req.test_id:
                    break
            assert done.data.incoming is not None and done.data.incoming.status is Status.SUCCESS
            await asyncio.sleep(1.5)  # longer than the ack wait: a redelivery would have started by now
            assert fake.connections == 1
        finally:
            await nc.close()


async def test_http_surface(app: FastAPI, private_nats: NatsServer) -> None:
    transport = httpx.ASGITransport(app=app)
    token = await issue_token(private_nats.url)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://svc", headers=bearer_header(token)
    ) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {"nats": True}
        spec = (await client.get("/openapi.json")).json()
        assert spec["info"]["title"] == "mailwarden tester-svc"
        assert set(spec["paths"]) == {"/healthz", "/readyz", "/metrics"}
        metrics = (await client.get("/metrics")).text
        assert "mailwarden_tester_step_duration_seconds_bucket" in metrics
        assert "mail.test" not in metrics and "127.0.0.1" not in metrics
