"""Sending through the real aiosmtpd with TLS + AUTH: what arrives, what is refused, retried, reported."""

from __future__ import annotations

import base64
import email
import email.policy
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from nats.aio.client import Client
from sender_helpers import Recorder, eventually, mail

from mailwarden_runtime.audit import AuditQuery, audit_trail
from mailwarden_runtime.auth import Role, bearer_header
from mailwarden_runtime.auth.bootstrap import issue_token
from mailwarden_servers import SmtpServer
from sender_svc.config import Settings

pytestmark = pytest.mark.integration


def parsed(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


async def test_a_mail_arrives_once_with_bcc_only_in_the_envelope(
    client: httpx.AsyncClient, seed: Any, smtp_clean: SmtpServer, events: Recorder
) -> None:
    await seed("mbx1")
    attachment = base64.b64encode("Rechnung für Zoë\n".encode()).decode()
    body = mail(
        "mbx1",
        "k1",
        to=[{"name": "Zoë Ünal", "address": "zoe@example.org"}],
        cc=[{"address": "desk@example.org"}],
        bcc=[{"address": "audit@example.org"}],
        subject="Grüße aus Köln ✓",
        text="Grüße, Zoë!\n.leading dot line\n",
        html="<p>Grüße, <b>Zoë</b>!</p>",
        attachments=[{"filename": "rechnung-ä.txt", "content_type": "text/plain", "content_b64": attachment}],
        in_reply_to="<order-7@shop.example>",
        references=["<order-7@shop.example>"],
        headers={"X-Crm-Case": "7"},
    )
    r = await client.post("/sends", json=body)
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["status"] in ("queued", "sending", "sent") and not accepted["duplicate"]

    sent = (await events.wait_for("EmailSent", mailbox_id="mbx1"))[0]["data"]
    assert sent["accepted"] == ["zoe@example.org", "desk@example.org", "audit@example.org"]
    assert sent["reply"].startswith("250") and sent["attempts"] == 1
    assert sent["message_id"].endswith("@mail.test>")

    assert len(smtp_clean.messages) == 1
    got = smtp_clean.messages[0]
    assert got.auth_login == "alice" and got.mail_from == "mbx1@mail.test"
    assert sorted(got.rcpt_tos) == ["audit@example.org", "desk@example.org", "zoe@example.org"]
    assert b"audit@example.org" not in got.data  # Bcc: envelope only
    assert got.data.isascii()  # RFC 2047 headers, encoded bodies: no SMTPUTF8 needed
    msg = parsed(got.data)
    assert msg["Bcc"] is None
    assert msg["Subject"] == "Grüße aus Köln ✓"
    assert msg["To"].addresses[0].display_name == "Zoë Ünal"
    assert msg["From"].addresses[0].addr_spec == "mbx1@mail.test"
    assert msg["Message-ID"] == sent["message_id"]
    assert msg["In-Reply-To"] == "<order-7@shop.example>" and msg["X-Crm-Case"] == "7"
    assert msg["Date"] is not None
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content().replace("\r\n", "\n") == "Grüße, Zoë!\n.leading dot line\n"  # dot unstuffed
    assert "<b>Zoë</b>" in html.get_content()
    attachments = list(msg.iter_attachments())
    assert [a.get_filename() for a in attachments] == ["rechnung-ä.txt"]
    assert attachments[0].get_payload(decode=True) == "Rechnung für Zoë\n".encode()  # bytes as given

    status = (await client.get("/sends/mbx1/k1")).json()
    assert status["status"] == "sent" and status["sent"]["message_id"] == sent["message_id"]


async def test_the_same_key_sends_once_and_answers_the_first_outcome(
    client: httpx.AsyncClient, seed: Any, smtp_clean: SmtpServer, events: Recorder
) -> None:
    await seed("mbx2")
    first = await client.post("/sends", json=mail("mbx2", "same"))
    second = await client.post("/sends", json=mail("mbx2", "same"))
    assert first.status_code == second.status_code == 202
    assert second.json()["duplicate"] and second.json()["send_id"] == first.json()["send_id"]
    await events.wait_for("EmailSent", mailbox_id="mbx2")
    third = (await client.post("/sends", json=mail("mbx2", "same"))).json()
    assert third["status"] == "sent" and third["duplicate"]
    assert third["sent"]["message_id"] == first.json()["message_id"]
    other = await client.post("/sends", json=mail("mbx2", "same", subject="another message"))
    assert other.status_code == 409 and other.json()["errors"][0]["field"] == "idempotency_key"
    await eventually(lambda: len(smtp_clean.messages) == 1)
    assert len(smtp_clean.messages) == 1 and len(events.of("EmailSent", "mbx2")) == 1


async def test_a_sends_caller_is_kept_in_the_send_its_events_and_the_audit(
    app: FastAPI, settings: Settings, seed: Any, smtp_clean: SmtpServer, events: Recorder, nc: Client
) -> None:
    """An integration's send names it: in the stored send, as the actor of its outcome, in the audit."""
    await seed("mbx-crm")
    token = await issue_token(settings.nats_url, "crm", [Role.INTEGRATION], mailboxes=["mbx-crm"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://svc", headers=bearer_header(token)
    ) as crm:
        r = await crm.post("/sends", json=mail("mbx-crm", "k-audited"))
        assert r.status_code == 202, r.text
        assert r.json()["requested_by"] == "token:crm"
        assert (await crm.post("/sends", json=mail("mbx-other", "k-x"))).status_code == 403  # not granted
    sent = (await events.wait_for("EmailSent", mailbox_id="mbx-crm"))[0]
    assert sent["actor"] == "token:crm"
    doc = await app.state.stores.sends.send("mbx-crm", "k-audited")
    assert doc is not None and doc.requested_by == "token:crm"

    async def audited() -> Any:
        trail = await audit_trail(nc, AuditQuery(actor="token:crm", since_hours=1))
        return [(e.event, e.ids.get("mailbox_id")) for e in trail.items]

    assert await eventually(audited) == [("EmailSent", "mbx-crm")]
