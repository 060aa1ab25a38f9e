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
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import nats
import pytest
from e2e_helpers import E2eFactory, E2eStack
from fastapi import FastAPI
from nats.aio.client import Client
from nats.js.api import DeliverPolicy

from mailwarden_servers import DovecotServer, TestCertificates, eventually

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


@dataclass
class Stack:
    """The shared end-to-end stack (e2e_helpers.py) with sync-svc, and what these tests read of it."""

    e2e: E2eStack
    nc: Client

    @property
    def mailbox_id(self) -> str:
        return self.e2e.mailbox_id

    @property
    def sync(self) -> FastAPI:
        return self.e2e.apps["sync"]

    async def stored(self) -> list[dict[str, Any]]:
        """What JetStream keeps (a re-publish after a restart mid-batch is dropped there by its id;
        a core subscriber may see it twice, a JetStream consumer never)."""
        js = self.nc.jetstream()
        subject = f"mailwarden.email.received.{self.mailbox_id}"
        info = await js.stream_info("MW_EMAIL", subjects_filter=subject)
        count = sum((info.state.subjects or {}).values())
        if not count:
            return []
        sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
        try:
            return [json.loads((await sub.next_msg(timeout=10)).data) for _ in range(count)]
        finally:
            await sub.unsubscribe()

    async def mailbox(self) -> dict[str, Any]:
        resp = await self.e2e.http["mailbox"].get(f"/mailboxes/{self.mailbox_id}")
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    async def sync_alerts(self, owner_id: str) -> list[dict[str, Any]]:
        params = {"recipient_kind": "user", "recipient_id": owner_id, "mailbox_id": self.mailbox_id}
        resp = await self.e2e.http["alert"].get("/alerts", params=params)
        assert resp.status_code == 200, resp.text
        return [a for a in resp.json()["items"] if a["kind"] == "sync"]


@asynccontextmanager
async def running_stack(
    e2e_stack: E2eFactory,
    nats_url: str,
    certs: TestCertificates,
    user: str,
    password: str,
    mailbox: dict[str, Any] | None = None,
    **sync_settings: Any,
) -> AsyncIterator[Stack]:
    """Every service and sync-svc; an IMAP profile processing email from today and one approved
    mailbox, not yet tested."""
    from sync_svc.app import create_app
    from sync_svc.config import Settings

    def sync() -> dict[str, FastAPI]:
        settings = Settings(sync_allow_networks="127.0.0.0/8", sync_ca_file=str(certs.ca), **sync_settings)
        return {"sync": create_app(settings)}

    today = str(datetime.now(UTC).date())
    nc = await nats.connect(nats_url)
    try:
        async with e2e_stack(
            sync, user, password, advanced={"process_email_from": today}, mailbox=mailbox
        ) as s:
            yield Stack(s, nc)
    finally:
        await nc.close()


async def test_test_and_enable_then_the_inbox_arrives_as_events(
    nats_url: str,
    dovecot: DovecotServer,
    certs: TestCertificates,
    new_mail_user: Callable[..., tuple[str, str]],
    e2e_stack: E2eFactory,
) -> None:
    user, password = new_mail_user()
    await asyncio.to_thread(append, dovecot, user, password, ["before 1", "before 2"])
    async with running_stack(e2e_stack, nats_url, certs, user, password, sync_poll_floor_s=0.5) as s:
        await asyncio.sleep(1.0)
        assert await s.stored() == []  # not enabled yet: nothing is synced
        await s.e2e.test_and_enable()

        async def two() -> bool:
            return len(await s.stored()) >= 2

        await eventually(two, "the INBOX's two messages as EmailReceived")
        await asyncio.to_thread(append, dovecot, user, password, ["after"])

        async def three() -> bool:
            return len(await s.stored()) >= 3

        await eventually(three, "the new message as EmailReceived")
        await asyncio.sleep(1.0)
        received = await s.stored()
        state = await http_get(s.sync, f"/mailboxes/{s.mailbox_id}/sync", s.e2e.auth)
    assert [e["data"]["subject"] for e in received] == ["before 1", "before 2", "after"]
    assert state["synced"] and state["messages_seen"] == 3 and state["mode"] == "idle"


async def test_a_password_changed_on_the_server_alerts_once_then_resolves(
    nats_url: str,
    dovecot: DovecotServer,
    certs: TestCertificates,
    new_mail_user: Callable[..., tuple[str, str]],
    e2e_stack: E2eFactory,
) -> None:
    """Mid-life, the server's password changes: the polling sync fails (one episode), mailbox-svc
    re-tests (auth_failed is permanent: incoming disabled, status failure), alert-svc alerts both
    owners once however many polls fail; the new password entered and Test & Enable: synced again,
    the alert resolved by the recovery."""
    user, password = new_mail_user()
    await asyncio.to_thread(append, dovecot, user, password, ["one"])
    async with running_stack(
        e2e_stack, nats_url, certs, user, password,
        mailbox={"outgoing_delivery": "none"},  # incoming alone: its test decides
        sync_idle=False, sync_poll_floor_s=0.3, sync_poll_jitter=0.0,
        sync_retry_base_s=0.2, sync_retry_max_s=0.4,
    ) as s:  # fmt: skip
        await s.e2e.test_and_enable()

        async def first() -> bool:
            return len(await s.stored()) >= 1

        await eventually(first, "the INBOX's message as EmailReceived")
        new_password = f"{password}-changed"
        dovecot.add_user(user, new_password)

        async def disabled() -> dict[str, Any] | None:
            box = await s.mailbox()
            return box if box["incoming_status"] == "failure" and not box["enabled_incoming"] else None

        box = await eventually(disabled, "incoming disabled by the re-test")
        assert box["disabled_reason"] == "auth_failed"
        for owner in (s.e2e.mailbox_owner, s.e2e.profile_owner):

            async def raised(owner: str = owner) -> list[dict[str, Any]] | None:
                return await s.sync_alerts(owner) or None

            [alert] = await eventually(raised, f"the sync alert of {owner}")
            assert alert["state"] == "open" and alert["code"] == "mailbox_sync_failed"
            assert "failed at the 'login' step" in alert["message"]
        await asyncio.sleep(2.0)  # polls would have failed several times by now
        for owner in (s.e2e.mailbox_owner, s.e2e.profile_owner):
            [alert] = await s.sync_alerts(owner)
            assert alert["count"] == 1 and alert["state"] == "open"

        # The owner enters the server's new password, then Test & Enable.
        changed = await s.e2e.http["mailbox"].patch(
            f"/mailboxes/{s.mailbox_id}", json={"credentials": {"password": new_password}}
        )
        assert changed.status_code == 200, changed.text
        await asyncio.to_thread(append, dovecot, user, new_password, ["two"])
        await s.e2e.test_and_enable()

        async def resolved() -> bool:
            alerts = [a for o in (s.e2e.mailbox_owner, s.e2e.profile_owner) for a in await s.sync_alerts(o)]
            return [a["state"] for a in alerts] == ["resolved", "resolved"]

        await eventually(resolved, "the sync alerts resolved")

        async def second() -> bool:
            return len(await s.stored()) >= 2

        await eventually(second, "the new message once synced again")
        [alert] = await s.sync_alerts(s.e2e.mailbox_owner)
        assert alert["resolved_reason"] == "sync_recovered"
        box = await s.mailbox()
    assert box["enabled_incoming"] and box["incoming_status"] == "success"


async def http_get(app: FastAPI, path: str, auth: dict[str, str]) -> dict[str, Any]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc", headers=auth) as client:
        resp = await client.get(path)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body
