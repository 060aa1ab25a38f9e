"""Outgoing email end to end: Test & Enable through the public APIs, then sender-svc sends a mail.

The four services and sender-svc in-process on the suite's servers: sender-svc asks mailbox-svc's
``login`` operation for the mailbox's outgoing login (with its service token; purpose ``send``),
logs in to the SMTP server with AUTH, and the mail is accepted once, as the mailbox's user. With
the profile's ``save_sent_copy`` on, the mail lands once in the user's Sent folder on Dovecot
(IMAP APPEND with the incoming login, purpose ``sent_copy``), also after a deferred first attempt
and a copy repeated after a crash; a copy that cannot be saved leaves the mail sent.
"""

from __future__ import annotations

import asyncio
import imaplib
import json
import ssl
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import nats
import pytest
from fastapi import FastAPI
from nats.js.api import DeliverPolicy

from mailwarden_runtime.auth import bearer_header
from mailwarden_servers import DovecotServer, SmtpServer, TestCertificates, eventually

pytestmark = pytest.mark.integration


@dataclass
class Enabled:
    """A mailbox enabled for outgoing email through the public APIs, and the services' clients."""

    http: dict[str, httpx.AsyncClient]
    sender: FastAPI
    mailbox_id: str
    tag: str


@asynccontextmanager
async def enabled_mailbox(
    services: Callable[[], AbstractAsyncContextManager[dict[str, FastAPI]]],
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
    certs: TestCertificates,
    login: tuple[str, str],
    advanced: dict[str, Any] | None = None,
    **sender_settings: Any,
) -> AsyncIterator[Enabled]:
    """Profile (IMAP on Dovecot, SMTP on aiosmtpd), mailbox with ``login``, approved, Test & Enable."""
    from sender_svc.app import create_app
    from sender_svc.config import Settings

    user, password = login
    tag = uuid.uuid4().hex[:8]
    async with services() as apps, AsyncExitStack() as stack:
        # The env the fixture set (database prefix, key rings) is sender-svc's too.
        sender = create_app(
            Settings(
                sender_allow_networks="127.0.0.0/8",
                sender_ca_file=str(certs.ca),
                sender_poll_s=0.1,
                **sender_settings,
            )
        )
        await stack.enter_async_context(sender.router.lifespan_context(sender))
        auth = bearer_header(apps["profile"].state.token)
        http = {
            name: await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc", headers=auth)
            )
            for name, app in {**apps, "sender": sender}.items()
        }
        settings = (await http["profile"].get("/settings")).json()
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
            "allowed_ports": [dovecot.imaps_port, smtp_server.port_starttls],
        }
        assert (await http["profile"].put("/settings", json=body)).status_code == 200
        profile = await http["profile"].post(
            "/profiles",
            json={
                "name": f"send {tag}",
                "owner": {"kind": "user", "id": f"p{tag}", "name": "P", "email": "p@example.org"},
                "incoming_protocol": "imap",
                "incoming": {"host": "127.0.0.1", "port": dovecot.imaps_port, "tls": "implicit"},
                "use_same_settings_for_outgoing": False,
                "outgoing": {"host": "127.0.0.1", "port": smtp_server.port_starttls, "tls": "starttls"},
                "advanced": advanced or {},
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
        probe = {
            "mailbox_id": mailbox_id,
            "idempotency_key": f"probe-{tag}",
            "to": [{"address": "bob@example.org"}],
            "subject": "probe",
            "text": "-",
        }
        refused = await http["sender"].post("/sends", json=probe)
        assert refused.status_code in (404, 409)  # not enabled for outgoing yet: nothing queued
        assert (
            await http["mailbox"].post("/mailboxes/approve", json={"mailbox_ids": [mailbox_id]})
        ).status_code == 200
        assert (await http["mailbox"].post(f"/mailboxes/{mailbox_id}/test")).status_code == 202

        # Refused for its attachment (a bucket not allowed), no longer for the mailbox: nothing queued.
        unsendable = {
            **probe,
            "idempotency_key": f"never-{tag}",
            "attachments": [{"filename": "x.txt", "object": {"bucket": "NOT_ALLOWED", "name": "x"}}],
        }

        async def enabled() -> bool:
            got = await http["sender"].post("/sends", json=unsendable)
            return got.status_code == 422

        await eventually(enabled, "the mailbox enabled for outgoing email, as sender-svc sees it")
        yield Enabled(http, sender, mailbox_id, tag)


async def send(e: Enabled, key: str, to: str, subject: str, text: str = "-") -> dict[str, Any]:
    """Send one mail through sender-svc's API; where it stands once it has an outcome."""
    mail = {"mailbox_id": e.mailbox_id, "idempotency_key": key, "to": [{"address": to}]}
    assert (
        await e.http["sender"].post("/sends", json={**mail, "subject": subject, "text": text})
    ).status_code == 202
    return await final_status(e, key)


async def final_status(e: Enabled, key: str) -> dict[str, Any]:
    async def outcome() -> dict[str, Any] | None:
        found: dict[str, Any] = (await e.http["sender"].get(f"/sends/{e.mailbox_id}/{key}")).json()
        return found if found["status"] in ("sent", "failed", "uncertain") else None

    found = await eventually(outcome, "the mail's outcome")
    assert found is not None
    return found


async def test_test_and_enable_then_a_mail_goes_out_with_the_mailbox_login(
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
    certs: TestCertificates,
    mail_users: dict[str, str],
    mailwarden_services: Callable[[], AbstractAsyncContextManager[dict[str, FastAPI]]],
) -> None:
    user = "alice"
    login = (user, mail_users[user])
    async with enabled_mailbox(mailwarden_services, dovecot, smtp_server, certs, login) as e:
        text = "sent with the login mailbox-svc handed over"
        got = await send(e, f"e2e-{e.tag}", "bob@example.org", f"end to end {e.tag}", text)
    assert got["status"] == "sent", got
    mine = [m for m in smtp_server.messages if f"end to end {e.tag}".encode() in m.data]
    assert len(mine) == 1 and mine[0].auth_login == user and mine[0].rcpt_tos == ["bob@example.org"]


def sent_folder_count(
    dovecot: DovecotServer, certs: TestCertificates, login: tuple[str, str], message_id: str
) -> int:
    """How many messages with this Message-ID the user's Sent folder holds (0 without the folder)."""
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    with imaplib.IMAP4_SSL("127.0.0.1", dovecot.imaps_port, ssl_context=ctx, timeout=10) as imap:
        imap.login(*login)
        status, _ = imap.select('"Sent"', readonly=True)
        if status != "OK":
            return 0
        status, data = imap.uid("SEARCH", "HEADER", "Message-ID", message_id)
        assert status == "OK"
        return len((data[0] or b"").split())


async def test_a_sent_mail_is_copied_to_the_sent_folder_once_also_when_retried_and_copied_again(
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
    certs: TestCertificates,
    mail_users: dict[str, str],
    mailwarden_services: Callable[[], AbstractAsyncContextManager[dict[str, FastAPI]]],
) -> None:
    login = ("bob", mail_users["bob"])
    advanced = {"save_sent_copy": True, "sent_folder": "Sent"}
    async with enabled_mailbox(
        mailwarden_services, dovecot, smtp_server, certs, login, advanced, sender_backoff_s=0.3
    ) as e:
        key = f"copy-{e.tag}"
        smtp_server.fail_next_data("451 4.3.0 try again later")  # the first attempt is deferred
        got = await send(e, key, "carol@example.org", f"copied {e.tag}", "a copy belongs in the Sent folder")
        assert got["status"] == "sent" and got["attempts"] == 2, got
        message_id = got["message_id"]
        sends = e.sender.state.repository.sends

        async def copied() -> dict[str, Any] | None:
            doc = await sends.find_one({"key": key})
            return doc["sent_copy"] if doc and doc.get("sent_copy", {}).get("state") != "pending" else None

        copy = await eventually(copied, "the copy in the Sent folder")
        assert copy is not None and copy["state"] == "saved", copy
        assert await asyncio.to_thread(sent_folder_count, dovecot, certs, login, message_id) == 1

        # A copier that stopped after APPEND, before storing it: the next one finds it there.
        await sends.update_one({"key": key}, {"$set": {"sent_copy.state": "pending"}})
        e.sender.state.copies.offer(got["send_id"], None)
        again = await eventually(copied, "the repeated copy")
        assert again is not None and again["state"] == "saved" and again["attempts"] == 2, again
        assert await asyncio.to_thread(sent_folder_count, dovecot, certs, login, message_id) == 1
    delivered = [m for m in smtp_server.messages if f"copied {e.tag}".encode() in m.data]
    assert len(delivered) == 1  # the deferred attempt is not kept by the server


async def test_a_copy_that_cannot_be_saved_leaves_the_mail_sent(
    nats_url: str,
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
    certs: TestCertificates,
    mail_users: dict[str, str],
    mailwarden_services: Callable[[], AbstractAsyncContextManager[dict[str, FastAPI]]],
) -> None:
    # A folder name Dovecot refuses to create: the copy fails for good, the mail stays sent.
    login = ("alice", mail_users["alice"])
    advanced = {"save_sent_copy": True, "sent_folder": "Sent/../../x"}
    async with enabled_mailbox(
        mailwarden_services, dovecot, smtp_server, certs, login, advanced, sender_copy_attempts=1
    ) as e:
        key = f"nocopy-{e.tag}"
        got = await send(e, key, "dan@example.org", f"not copied {e.tag}")
        sends = e.sender.state.repository.sends

        async def ended() -> dict[str, Any] | None:
            doc = await sends.find_one({"key": key})
            return doc if doc and doc.get("sent_copy", {}).get("state") in ("saved", "failed") else None

        doc = await eventually(ended, "the copy's end")
        assert doc is not None
        nc = await nats.connect(nats_url)
        try:
            sub = await nc.jetstream().subscribe(
                f"mailwarden.send.sent_copy.{e.mailbox_id}",
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.ALL,
            )
            event = json.loads((await sub.next_msg(timeout=30)).data)
        finally:
            await nc.close()
    assert got["status"] == "sent", got
    assert doc["status"] == "sent" and doc["sent_copy"]["state"] == "failed", doc["sent_copy"]
    assert event["type"] == "EmailSentCopy" and event["data"]["saved"] is False, event
    assert event["data"]["error"]["step"] == "sent_copy", event
    assert event["data"]["error"]["code"] == "server_permanent_error", event  # CREATE: NO [CANNOT]
