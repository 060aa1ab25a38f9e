"""Email flows end to end: Test & Enable through the public APIs, then sync-svc publishes the INBOX.

The four services and sync-svc in-process on the suite's servers: sync-svc asks mailbox-svc's
``login`` operation for the mailbox's login (with its service token), and the mailbox is synced
only once mailbox-svc enabled it.
"""

from __future__ import annotations

import asyncio
import imaplib
import json
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import httpx
import nats
import pytest
from fastapi import FastAPI
from nats.js.api import DeliverPolicy

from mailwarden_runtime.auth import bearer_header
from mailwarden_servers import DovecotServer, SmtpServer, TestCertificates, eventually

pytestmark = pytest.mark.integration


def append(dovecot: DovecotServer, user: str, password: str, subjects: list[str]) -> None:
    imap = imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
    try:
        imap.login(user, password)
        for subject in subjects:
            raw = f"From: a@example.org\r\nSubject: {subject}\r\nMessage-ID: <{uuid.uuid4()}@x>\r\n\r\nhi\r\n"
            imap.append("INBOX", None, None, raw.encode())
    finally:
        imap.logout()


async def test_test_and_enable_then_the_inbox_arrives_as_events(
    nats_url: str,
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
    certs: TestCertificates,
    new_mail_user: Callable[..., tuple[str, str]],
    mailwarden_services: Callable[[], AbstractAsyncContextManager[dict[str, FastAPI]]],
) -> None:
    from sync_svc.app import create_app
    from sync_svc.config import Settings

    user, password = new_mail_user()
    await asyncio.to_thread(append, dovecot, user, password, ["before 1", "before 2"])
    tag = uuid.uuid4().hex[:8]
    nc = await nats.connect(nats_url)
    async with mailwarden_services() as apps, AsyncExitStack() as stack:
        # The env the fixture set (database prefix, key rings) is sync-svc's too.
        sync = create_app(
            Settings(sync_allow_networks="127.0.0.0/8", sync_ca_file=str(certs.ca), sync_poll_floor_s=0.5)
        )
        await stack.enter_async_context(sync.router.lifespan_context(sync))
        auth = bearer_header(apps["profile"].state.token)
        http = {
            name: await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc", headers=auth)
            )
            for name, app in apps.items()
        }
        settings = (await http["profile"].get("/settings")).json()
        ports = [dovecot.imaps_port, smtp_server.port_starttls]
        keep = {
            "default_profile_id",
            "incoming_delivery",
            "outgoing_delivery",
            "approved_users_only",
            "alert_levels",
        }
        body = {
            **{k: v for k, v in settings.items() if k in keep},
            "port_preset": "custom",
            "allowed_ports": ports,
        }
        assert (await http["profile"].put("/settings", json=body)).status_code == 200
        profile = await http["profile"].post(
            "/profiles",
            json={
                "name": f"sync {tag}",
                "owner": {"kind": "user", "id": f"p{tag}", "name": "P", "email": "p@example.org"},
                "incoming_protocol": "imap",
                "incoming": {"host": "127.0.0.1", "port": dovecot.imaps_port, "tls": "implicit"},
                "use_same_settings_for_outgoing": False,
                "outgoing": {"host": "127.0.0.1", "port": smtp_server.port_starttls, "tls": "starttls"},
                "advanced": {"process_email_from": str(datetime.now(UTC).date())},
            },
        )
        assert profile.status_code == 201, profile.text
        mailbox_id = f"mbx{tag}"
        created = await http["mailbox"].post(
            "/mailboxes",
            json={
                "mailbox_id": mailbox_id,
                "email": f"{user}@mail.test",
                "owner": {"kind": "user", "id": f"o{tag}", "name": "O", "email": "o@example.org"},
                "profile_id": profile.json()["profile_id"],
                "credentials": {"username": user, "password": password},
            },
        )
        assert created.status_code == 201, created.text
        subject = f"mailwarden.email.received.{mailbox_id}"
        js = nc.jetstream()

        async def stored() -> list[dict[str, Any]]:
            """What JetStream keeps (a re-publish after a restart mid-batch is dropped there by its id;
            a core subscriber may see it twice, a JetStream consumer never)."""
            info = await js.stream_info("MW_EMAIL", subjects_filter=subject)
            count = sum((info.state.subjects or {}).values())
            if not count:
                return []
            sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
            try:
                return [json.loads((await sub.next_msg(timeout=10)).data) for _ in range(count)]
            finally:
                await sub.unsubscribe()

        await asyncio.sleep(1.0)
        assert await stored() == []  # not enabled yet: nothing is synced
        assert (
            await http["mailbox"].post("/mailboxes/approve", json={"mailbox_ids": [mailbox_id]})
        ).status_code == 200
        assert (await http["mailbox"].post(f"/mailboxes/{mailbox_id}/test")).status_code == 202

        async def two() -> bool:
            return len(await stored()) >= 2

        await eventually(two, "the INBOX's two messages as EmailReceived")
        await asyncio.to_thread(append, dovecot, user, password, ["after"])

        async def three() -> bool:
            return len(await stored()) >= 3

        await eventually(three, "the new message as EmailReceived")
        await asyncio.sleep(1.0)
        received = await stored()
        state = await http_get(sync, f"/mailboxes/{mailbox_id}/sync", auth)
    await nc.close()
    assert [e["data"]["subject"] for e in received] == ["before 1", "before 2", "after"]
    assert state["synced"] and state["messages_seen"] == 3 and state["mode"] == "idle"


async def http_get(app: FastAPI, path: str, auth: dict[str, str]) -> dict[str, Any]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc", headers=auth) as client:
        resp = await client.get(path)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body
