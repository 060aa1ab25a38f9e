"""Outgoing email end to end: Test & Enable through the public APIs, then sender-svc sends a mail.

The four services and sender-svc in-process on the suite's servers (the shared stack of
e2e_helpers.py): sender-svc asks mailbox-svc's ``login`` operation for the mailbox's outgoing login
(with its service token; purpose ``send``), logs in to the SMTP server with AUTH, and the mail is
accepted once, as the mailbox's user. With the profile's ``save_sent_copy`` on, the mail lands once
in the user's Sent folder on Dovecot (IMAP APPEND with the incoming login, purpose ``sent_copy``),
also after a deferred first attempt and a copy repeated after a crash; a copy that cannot be saved
leaves the mail sent.
"""

from __future__ import annotations

import asyncio
import imaplib
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import nats
import pytest
from e2e_helpers import E2eFactory, E2eStack
from fastapi import FastAPI
from nats.js.api import DeliverPolicy

from mailwarden_servers import DovecotServer, SmtpServer, TestCertificates, eventually

pytestmark = pytest.mark.integration


@asynccontextmanager
async def enabled_mailbox(
    e2e_stack: E2eFactory,
    certs: TestCertificates,
    login: tuple[str, str],
    advanced: dict[str, Any] | None = None,
    **sender_settings: Any,
) -> AsyncIterator[E2eStack]:
    """The shared stack with sender-svc (``apps["sender"]``): refused while the mailbox is not
    enabled, then approved, Test & Enable, and enabled for outgoing email as sender-svc sees it."""
    from sender_svc.app import create_app
    from sender_svc.config import Settings

    def sender() -> dict[str, FastAPI]:
        settings = Settings(
            sender_allow_networks="127.0.0.0/8",
            sender_ca_file=str(certs.ca),
            sender_poll_s=0.1,
            **sender_settings,
        )
        return {"sender": create_app(settings)}

    async with e2e_stack(sender, *login, advanced=advanced, approve=False) as s:
        probe = {
            "mailbox_id": s.mailbox_id,
            "idempotency_key": f"probe-{s.tag}",
            "to": [{"address": "bob@example.org"}],
            "subject": "probe",
            "text": "-",
        }
        refused = await s.http["sender"].post("/sends", json=probe)
        assert refused.status_code in (404, 409)  # not enabled for outgoing yet: nothing queued
        await s.approve()
        await s.test_and_enable()

        # Refused for its attachment (a bucket not allowed), no longer for the mailbox: nothing queued.
        unsendable = {
            **probe,
            "idempotency_key": f"never-{s.tag}",
            "attachments": [{"filename": "x.txt", "object": {"bucket": "NOT_ALLOWED", "name": "x"}}],
        }

        async def enabled() -> bool:
            got = await s.http["sender"].post("/sends", json=unsendable)
            return got.status_code == 422

        await eventually(enabled, "the mailbox enabled for outgoing email, as sender-svc sees it")
        yield s


async def send(s: E2eStack, key: str, to: str, subject: str, text: str = "-") -> dict[str, Any]:
    """Send one mail through sender-svc's API; where it stands once it has an outcome."""
    mail = {"mailbox_id": s.mailbox_id, "idempotency_key": key, "to": [{"address": to}]}
    assert (
        await s.http["sender"].post("/sends", json={**mail, "subject": subject, "text": text})
    ).status_code == 202

    async def outcome() -> dict[str, Any] | None:
        found: dict[str, Any] = (await s.http["sender"].get(f"/sends/{s.mailbox_id}/{key}")).json()
        return found if found["status"] in ("sent", "failed", "uncertain") else None

    found = await eventually(outcome, "the mail's outcome")
    assert found is not None
    return found


async def copy_ended(s: E2eStack, key: str, what: str) -> dict[str, Any]:
    """The stored send once its Sent-folder copy has ended (``saved`` or ``failed``)."""
    sends = s.apps["sender"].state.stores.sends.sends

    async def ended() -> dict[str, Any] | None:
        doc: dict[str, Any] | None = await sends.find_one({"key": key})
        return doc if doc and doc.get("sent_copy", {}).get("state") in ("saved", "failed") else None

    doc = await eventually(ended, what)
    assert doc is not None
    return doc


async def test_test_and_enable_then_a_mail_goes_out_with_the_mailbox_login(
    smtp_server: SmtpServer,
    certs: TestCertificates,
    mail_users: dict[str, str],
    e2e_stack: E2eFactory,
) -> None:
    user = "alice"
    async with enabled_mailbox(e2e_stack, certs, (user, mail_users[user])) as s:
        text = "sent with the login mailbox-svc handed over"
        got = await send(s, f"e2e-{s.tag}", "bob@example.org", f"end to end {s.tag}", text)
    assert got["status"] == "sent", got
    mine = [m for m in smtp_server.messages if f"end to end {s.tag}".encode() in m.data]
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
    e2e_stack: E2eFactory,
) -> None:
    login = ("bob", mail_users["bob"])
    advanced = {"save_sent_copy": True, "sent_folder": "Sent"}
    async with enabled_mailbox(e2e_stack, certs, login, advanced, sender_backoff_s=0.3) as s:
        key = f"copy-{s.tag}"
        smtp_server.fail_next_data("451 4.3.0 try again later")  # the first attempt is deferred
        got = await send(s, key, "carol@example.org", f"copied {s.tag}", "a copy belongs in the Sent folder")
        assert got["status"] == "sent" and got["attempts"] == 2, got
        message_id = got["message_id"]
        copy = (await copy_ended(s, key, "the copy in the Sent folder"))["sent_copy"]
        assert copy["state"] == "saved", copy
        assert await asyncio.to_thread(sent_folder_count, dovecot, certs, login, message_id) == 1

        # A copier that stopped after APPEND, before storing it: the next one finds it there.
        sender = s.apps["sender"].state
        await sender.stores.sends.sends.update_one({"key": key}, {"$set": {"sent_copy.state": "pending"}})
        sender.copies.offer(got["send_id"], None)
        again = (await copy_ended(s, key, "the repeated copy"))["sent_copy"]
        assert again["state"] == "saved" and again["attempts"] == 2, again
        assert await asyncio.to_thread(sent_folder_count, dovecot, certs, login, message_id) == 1
    delivered = [m for m in smtp_server.messages if f"copied {s.tag}".encode() in m.data]
    assert len(delivered) == 1  # the deferred attempt is not kept by the server


async def test_a_copy_that_cannot_be_saved_leaves_the_mail_sent(
    nats_url: str,
    certs: TestCertificates,
    mail_users: dict[str, str],
    e2e_stack: E2eFactory,
) -> None:
    # A folder name Dovecot refuses to create: the copy fails for good, the mail stays sent.
    login = ("alice", mail_users["alice"])
    advanced = {"save_sent_copy": True, "sent_folder": "Sent/../../x"}
    async with enabled_mailbox(e2e_stack, certs, login, advanced, sender_copy_attempts=1) as s:
        key = f"nocopy-{s.tag}"
        got = await send(s, key, "dan@example.org", f"not copied {s.tag}")
        doc = await copy_ended(s, key, "the copy's end")
        nc = await nats.connect(nats_url)
        try:
            sub = await nc.jetstream().subscribe(
                f"mailwarden.send.sent_copy.{s.mailbox_id}",
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
