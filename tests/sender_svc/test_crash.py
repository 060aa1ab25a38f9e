"""Never a duplicate: a sender killed (SIGKILL) after the message went out and before its outcome
was stored leaves it 'sending'; the next sender reports it uncertain and never sends it again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client
from pymongo import AsyncMongoClient
from sender_helpers import Recorder, enter_login, envelope_of, eventually, mail, setup_events

from contracts.models import TlsMode
from mailwarden_mailnet.login_desk import LoginDesk
from mailwarden_runtime.auth import bearer_header
from mailwarden_runtime.auth.bootstrap import issue_on
from mailwarden_runtime.bus import ensure_streams
from mailwarden_runtime.mongo import database_name
from mailwarden_servers import SmtpServer, TestCertificates
from mailwarden_servers.ports import free_port
from sender_svc.app import create_app
from sender_svc.config import Settings

pytestmark = pytest.mark.integration


def sender_process(settings: Settings, workdir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MW_NATS_URL": settings.nats_url,
        "MW_MONGODB_URI": settings.mongodb_uri,
        "MW_MONGODB_DB": settings.mongodb_db,
        "MW_DEV_MODE": "true",
        "MW_LOG_JSON": "false",
        "MW_SENDER_ALLOW_NETWORKS": "127.0.0.0/8",
        "MW_SENDER_CA_FILE": str(settings.sender_ca_file),
        # Waits long enough for the reply that the kill comes first; its lease ends 12 s after DATA.
        "MW_SENDER_LEASE_S": "12",
        "MW_SENDER_DATA_TIMEOUT_S": "5",
        "MW_SENDER_STEP_TIMEOUT_S": "3",
        "MW_SENDER_POLL_S": "0.05",
    }
    log = (workdir / f"sender-{uuid.uuid4().hex[:6]}.log").open("wb")
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "sender_svc.app:create_app",
        "--port",
        str(free_port()),
    ]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


async def rpc(nc: Client, op: str, body: dict[str, Any]) -> dict[str, Any]:
    headers = bearer_header(await issue_on(nc))
    reply = await nc.request(
        f"mailwarden.rpc.sender-svc.{op}", json.dumps(body).encode(), timeout=5, headers=headers
    )
    result: dict[str, Any] = json.loads(reply.data)
    return result


async def test_killed_after_data_is_uncertain_never_resent(
    settings: Settings,
    nc: Client,
    events: Recorder,
    desk: LoginDesk,
    smtp_clean: SmtpServer,
    certs: TestCertificates,
    workdir: Path,
) -> None:
    await ensure_streams(nc, settings)
    # The host is an IP literal the test certificate carries: the process resolves it itself.
    where: dict[str, Any] = {"host": "127.0.0.1", "port": smtp_clean.port_tls, "tls": TlsMode.IMPLICIT}
    enter_login(desk, "mbx1", **where)
    for event in setup_events("mbx1", **where):
        envelope = envelope_of(event)
        await nc.jetstream().publish(
            event.SUBJECT, envelope.to_bytes(), headers={"Nats-Msg-Id": str(envelope.id)}
        )
    gate = smtp_clean.hold_data()  # the server takes the message in, then keeps its reply back
    proc = sender_process(settings, workdir)
    try:

        async def submitted() -> bool:
            return bool((await rpc(nc, "send", mail("mbx1", "once")))["ok"])

        await eventually(submitted, timeout=30)
        await eventually(lambda: smtp_clean.message_count == 1, timeout=15)
        mongo: AsyncMongoClient[Any] = AsyncMongoClient(settings.mongodb_uri)
        sends = mongo[database_name(settings.mongodb_db, "sender-svc")]["sends"]
        doc = await sends.find_one({"key": "once"})
        assert doc is not None and doc["status"] == "sending"
        os.kill(proc.pid, signal.SIGKILL)  # after DATA, before the reply: the outcome is never stored
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        gate.set()
    assert events.of("EmailSent") == []

    app = create_app(settings)  # the next sender finds it when its lease ends
    async with app.router.lifespan_context(app):
        uncertain = (await events.wait_for("EmailSendUncertain", mailbox_id="mbx1", timeout=30))[0]["data"]
        assert uncertain["message_id"] == doc["message_id"] and uncertain["idempotency_key"] == "once"
        await asyncio.sleep(1.0)  # a resend would have happened by now
        status = await rpc(nc, "get", {"mailbox_id": "mbx1", "idempotency_key": "once"})
        assert status["result"]["status"] == "uncertain"
        again = await rpc(nc, "send", mail("mbx1", "once"))
        assert again["result"]["status"] == "uncertain" and again["result"]["duplicate"]
    await mongo.close()
    assert smtp_clean.message_count == 1
    assert events.of("EmailSent") == [] and events.of("EmailSendFailed") == []


async def test_killed_before_data_is_sent_once_by_the_next_sender(
    settings: Settings,
    nc: Client,
    events: Recorder,
    desk: LoginDesk,
    smtp_clean: SmtpServer,
    workdir: Path,
) -> None:
    await ensure_streams(nc, settings)
    where: dict[str, Any] = {"host": "127.0.0.1", "port": smtp_clean.port_tls, "tls": TlsMode.IMPLICIT}
    enter_login(desk, "mbx2", **where)
    for event in setup_events("mbx2", **where):
        envelope = envelope_of(event)
        await nc.jetstream().publish(
            event.SUBJECT, envelope.to_bytes(), headers={"Nats-Msg-Id": str(envelope.id)}
        )
    gate = smtp_clean.hold_rcpt()  # the sender logs in, then waits for the envelope's replies
    proc = sender_process(settings, workdir)
    try:

        async def submitted() -> bool:
            return bool((await rpc(nc, "send", mail("mbx2", "before")))["ok"])

        await eventually(submitted, timeout=30)
        await eventually(lambda: smtp_clean.auth_attempts == 1, timeout=15)
        os.kill(proc.pid, signal.SIGKILL)  # claimed, nothing handed over
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        smtp_clean.rcpt_gate = None
        gate.set()
    assert smtp_clean.message_count == 0

    app = create_app(settings)  # takes it over once the dead sender's claim runs out
    async with app.router.lifespan_context(app):
        sent = (await events.wait_for("EmailSent", mailbox_id="mbx2", timeout=40))[0]["data"]
        assert sent["attempts"] == 1 and sent["idempotency_key"] == "before"
        await asyncio.sleep(1.0)
    assert smtp_clean.message_count == 1
    assert events.of("EmailSendUncertain") == [] and events.of("EmailSendFailed") == []
