"""Submitting: refused by field with nothing queued; the same over HTTP, request-reply and events."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from nats.aio.client import Client
from sender_helpers import Recorder, mail

from contracts.envelope import make_envelope
from contracts.models import DeliveryMethod
from contracts.outgoing import SendEmailRequested
from mailwarden_runtime.auth import bearer_header
from mailwarden_runtime.auth.bootstrap import issue_on
from mailwarden_servers import SmtpServer

pytestmark = pytest.mark.integration


async def refused(client: httpx.AsyncClient, body: dict[str, Any], status: int, field: str) -> str:
    r = await client.post("/sends", json=body)
    assert r.status_code == status, r.text
    (error,) = r.json()["errors"]
    assert error["field"] == field
    lookup = await client.get(f"/sends/{body['mailbox_id']}/{body['idempotency_key']}")
    assert lookup.status_code == 404  # nothing queued
    return str(error["message"])


async def test_a_mailbox_that_may_not_send_is_refused_by_field(
    client: httpx.AsyncClient, seed: Any, smtp_clean: SmtpServer
) -> None:
    assert "no such mailbox" in await refused(client, mail("nobody", "k"), 404, "mailbox_id")
    await seed("pending", approval="pending", ready=False)
    assert "not approved" in await refused(client, mail("pending", "k"), 409, "mailbox_id")
    await seed("disabled", enabled_outgoing=False, ready=False)
    assert "not enabled" in await refused(client, mail("disabled", "k"), 409, "mailbox_id")
    await seed("router", outgoing_delivery=DeliveryMethod.EMAIL_ROUTER, ready=False)
    assert "server-side" in await refused(client, mail("router", "k"), 409, "mailbox_id")
    assert smtp_clean.sessions == 0


async def test_bad_addresses_headers_and_attachments_are_refused_by_field(
    client: httpx.AsyncClient, seed: Any
) -> None:
    await seed("mbx1")
    bad_domain = mail("mbx1", "k", cc=[{"address": "a@b.example"}, {"address": "x@-bad-.example"}])
    assert "host name" in await refused(client, bad_domain, 422, "cc.1.address")
    assert "dot-atom" in await refused(
        client, mail("mbx1", "k", to=[{"address": "a..b@c.example"}]), 422, "to.0.address"
    )
    bcc_header = mail("mbx1", "k", headers={"Bcc": "spy@example.org"})
    assert "may not be set" in await refused(client, bcc_header, 422, "headers")
    foreign = mail(
        "mbx1", "k", attachments=[{"filename": "a", "object": {"bucket": "MW_EMAIL_RAW", "name": "x"}}]
    )
    assert "not one attachments" in await refused(client, foreign, 422, "attachments.0.object")
    missing = mail(
        "mbx1", "k", attachments=[{"filename": "a", "object": {"bucket": "MW_OUTGOING", "name": "x"}}]
    )
    assert "no such object" in await refused(client, missing, 422, "attachments.0.object")


async def test_an_attachment_from_the_object_store(
    client: httpx.AsyncClient, nc: Client, seed: Any, smtp_clean: SmtpServer, events: Recorder
) -> None:
    await seed("mbx1")
    store = await nc.jetstream().object_store("MW_OUTGOING")  # created by sender-svc at startup
    assert (await store.status()).ttl == 7 * 86400  # MW_SENDER_ATTACHMENT_MAX_AGE_DAYS
    await store.put("invoices/7.pdf", b"%PDF-1.4 invoice 7")
    body = mail(
        "mbx1",
        "obj",
        attachments=[
            {
                "filename": "invoice.pdf",
                "content_type": "application/pdf",
                "object": {"bucket": "MW_OUTGOING", "name": "invoices/7.pdf"},
            }
        ],
    )
    assert (await client.post("/sends", json=body)).status_code == 202
    await events.wait_for("EmailSent", mailbox_id="mbx1")
    assert b"JVBERi0xLjQgaW52b2ljZSA3" in smtp_clean.messages[0].data  # base64 of the object


async def test_request_reply_answers_like_http(nc: Client, seed: Any, events: Recorder) -> None:
    await seed("mbx1")
    await seed("pending", approval="pending", ready=False)
    auth = bearer_header(await issue_on(nc))
    reply = json.loads(
        (
            await nc.request(
                "mailwarden.rpc.sender-svc.send", json.dumps(mail("mbx1", "rpc")).encode(), 10, headers=auth
            )
        ).data
    )
    assert reply["ok"] and reply["result"]["idempotency_key"] == "rpc"
    await events.wait_for("EmailSent", mailbox_id="mbx1")
    again = json.loads(
        (
            await nc.request(
                "mailwarden.rpc.sender-svc.send", json.dumps(mail("mbx1", "rpc")).encode(), 10, headers=auth
            )
        ).data
    )
    assert again["result"]["status"] == "sent" and again["result"]["duplicate"]
    no = json.loads(
        (
            await nc.request(
                "mailwarden.rpc.sender-svc.send",
                json.dumps(mail("pending", "rpc")).encode(),
                10,
                headers=auth,
            )
        ).data
    )
    assert not no["ok"] and no["status"] == 409 and no["errors"][0]["field"] == "mailbox_id"


async def test_requests_as_events_are_sent_or_refused_with_an_event(
    nc: Client, seed: Any, smtp_clean: SmtpServer, events: Recorder
) -> None:
    await seed("mbx1")
    await seed("pending", approval="pending", ready=False)
    js = nc.jetstream()
    for body in (mail("mbx1", "ev"), mail("mbx1", "ev"), mail("pending", "ev")):
        envelope = make_envelope(SendEmailRequested.model_validate(body), "crm")
        await js.publish("mailwarden.send.requested", envelope.to_bytes())
    await events.wait_for("EmailSent", mailbox_id="mbx1")
    failed = (await events.wait_for("EmailSendFailed", mailbox_id="pending"))[0]["data"]
    assert failed["error"]["code"] == "mailbox_not_approved" and failed["error"]["step"] == "submit"
    assert failed["errors"] == [{"loc": "mailbox_id", "msg": failed["error"]["message"]}]
    assert len(smtp_clean.messages) == 1  # the same key twice: one mail
