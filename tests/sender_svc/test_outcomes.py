"""Refused recipients, 4xx then success, 5xx, SIZE, STARTTLS, a refused login: each outcome classified."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sender_helpers import Recorder, envelope_of, eventually, mail

from contracts.events import MailboxSnapshot, MailboxUpdated
from contracts.models import TlsMode
from mailwarden_servers import SmtpServer
from sender_svc.documents import SendDoc

pytestmark = pytest.mark.integration


async def test_refused_recipients_are_reported_with_their_enhanced_codes(
    client: httpx.AsyncClient, seed: Any, smtp_clean: SmtpServer, events: Recorder
) -> None:
    await seed("mbx1")
    smtp_clean.refuse_rcpt("gone@example.org")
    to = [{"address": "ann@example.org"}, {"address": "gone@example.org"}]
    assert (await client.post("/sends", json=mail("mbx1", "part", to=to))).status_code == 202
    sent = (await events.wait_for("EmailSent", mailbox_id="mbx1"))[0]["data"]
    assert sent["accepted"] == ["ann@example.org"]
    (refusal,) = sent["refused"]
    assert refusal["address"] == "gone@example.org" and refusal["reply_code"] == 550
    assert refusal["enhanced_code"] == "5.1.1" and refusal["permanent"] is True
    assert smtp_clean.messages[0].rcpt_tos == ["ann@example.org"]

    only_gone = mail("mbx1", "none", to=[{"address": "gone@example.org"}])
    assert (await client.post("/sends", json=only_gone)).status_code == 202
    failed = (await events.wait_for("EmailSendFailed", mailbox_id="mbx1"))[0]["data"]
    assert failed["error"]["code"] == "recipient_refused" and failed["error"]["transient"] is False
    assert failed["refused"][0]["enhanced_code"] == "5.1.1" and failed["attempts"] == 1
    assert len(smtp_clean.messages) == 1


async def test_a_4xx_is_retried_with_a_stored_backoff_then_sent_once(
    client: httpx.AsyncClient, app: FastAPI, seed: Any, smtp_clean: SmtpServer, events: Recorder
) -> None:
    await seed("mbx1")
    smtp_clean.fail_next_data("451 4.3.0 Try again later")
    await client.post("/sends", json=mail("mbx1", "later"))

    async def retried() -> bool:
        doc = await app.state.stores.sends.send("mbx1", "later")
        return bool(doc and doc.last_error and doc.last_error.code == "server_temporary_error")

    await eventually(retried)
    sent = (await events.wait_for("EmailSent", mailbox_id="mbx1"))[0]["data"]
    assert sent["attempts"] == 2
    assert len(smtp_clean.messages) == 1  # the refused DATA is not a delivered message


async def test_a_5xx_after_data_is_final(
    client: httpx.AsyncClient, seed: Any, smtp_clean: SmtpServer, events: Recorder
) -> None:
    await seed("mbx1")
    smtp_clean.fail_next_data("554 5.6.0 Message content rejected")
    await client.post("/sends", json=mail("mbx1", "rejected"))
    failed = (await events.wait_for("EmailSendFailed", mailbox_id="mbx1"))[0]["data"]
    assert failed["error"]["code"] == "message_refused" and failed["error"]["step"] == "data"
    assert failed["reply_code"] == 554 and failed["enhanced_code"] == "5.6.0" and failed["attempts"] == 1
    status = (await client.get("/sends/mbx1/rejected")).json()
    assert status["status"] == "failed" and status["failed"]["reply_code"] == 554


async def test_over_the_advertised_size_fails_then_is_refused_before_queueing(
    client: httpx.AsyncClient, seed: Any, smtp_clean: SmtpServer, events: Recorder
) -> None:
    await seed("mbx1")
    big = base64.b64encode(b"x" * 250_000).decode()  # the server advertises SIZE 200000
    attachment = [{"filename": "big.bin", "content_b64": big}]
    assert (await client.post("/sends", json=mail("mbx1", "big1", attachments=attachment))).status_code == 202
    failed = (await events.wait_for("EmailSendFailed", mailbox_id="mbx1"))[0]["data"]
    assert failed["error"]["code"] == "message_too_large"
    # The sender now knows the server's SIZE: the next one is refused at once, nothing queued.
    r = await client.post("/sends", json=mail("mbx1", "big2", attachments=attachment))
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "attachments"
    assert "SIZE" in r.json()["errors"][0]["message"]
    assert (await client.get("/sends/mbx1/big2")).status_code == 404
    assert smtp_clean.messages == []


async def test_implicit_tls_and_starttls_both_work_and_starttls_is_never_skipped(
    client: httpx.AsyncClient, seed: Any, smtp_clean: SmtpServer, events: Recorder
) -> None:
    await seed("tls", port=smtp_clean.port_tls, tls=TlsMode.IMPLICIT, profile_id="prof-tls")
    await client.post("/sends", json=mail("tls", "k"))
    await events.wait_for("EmailSent", mailbox_id="tls")
    # A profile that says STARTTLS against a server that does not offer it: never sent in clear.
    assert smtp_clean.port_plain is not None
    await seed("clear", port=smtp_clean.port_plain, tls=TlsMode.STARTTLS, profile_id="prof-clear")
    await client.post("/sends", json=mail("clear", "k"))
    failed = (await events.wait_for("EmailSendFailed", mailbox_id="clear"))[0]["data"]
    assert failed["error"]["code"] == "starttls_unavailable" and failed["error"]["step"] == "connect"
    assert len(smtp_clean.messages) == 1


async def test_a_refused_login_is_reported_and_not_tried_again(
    client: httpx.AsyncClient, app: FastAPI, seed: Any, smtp_clean: SmtpServer, events: Recorder
) -> None:
    await seed("badpw", password="wrong-password")
    await client.post("/sends", json=mail("badpw", "k1"))
    failed = (await events.wait_for("EmailSendFailed", mailbox_id="badpw"))[0]["data"]
    assert failed["error"]["code"] == "auth_failed" and failed["error"]["scope"] == "mailbox"
    assert failed["mailbox"]["profile_owner"]["id"] == "p1"  # enough for alerts and mailbox-svc's policy
    # Marked right after the failure is stored (a send racing the mark may try the login once more).
    await eventually(
        lambda: app.state.stores.read.mailboxes.find_one({"_id": "badpw", "login_failed": {"$ne": None}})
    )
    attempts = smtp_clean.auth_attempts
    await client.post("/sends", json=mail("badpw", "k2"))
    await events.wait_for("EmailSendFailed", 2, mailbox_id="badpw")
    assert smtp_clean.auth_attempts == attempts  # the same login is not tried again
    assert smtp_clean.messages == []
    # Reported once for mailbox-svc's retry-or-disable policy (it tests the outgoing side again).
    (refused,) = [e["data"] for e in events.of("MailboxSendLoginRefused")]
    assert refused["mailbox"]["mailbox_id"] == "badpw" and refused["error"]["code"] == "auth_failed"
    assert refused["idempotency_key"] == "k1" and refused["login_id"].startswith("mailbox:badpw:v")


async def test_a_changed_login_is_tried_again_and_never_keyed_by_its_ciphertext(
    client: httpx.AsyncClient, app: FastAPI, seed: Any, smtp_clean: SmtpServer, events: Recorder, desk: Any
) -> None:
    await seed("badpw", password="wrong-password")
    await client.post("/sends", json=mail("badpw", "k1"))
    await events.wait_for("EmailSendFailed", mailbox_id="badpw")

    async def marked() -> Any:
        doc = await app.state.stores.read.mailboxes.find_one({"_id": "badpw"})
        return doc if doc and doc.get("login_failed") else None

    stored = await eventually(marked)  # marked right after the failure is stored
    assert stored["login_failed"].startswith("mailbox:badpw:v1:")  # an identity, not a digest
    # The owner enters the right password: mailbox-svc publishes the mailbox with a new version.
    desk.logins["badpw"] = ("alice", "alice-pw")
    snapshot = MailboxSnapshot.model_validate(stored["snapshot"]).model_copy(update={"version": 2})
    await app.state.runtime.publish(envelope_of(MailboxUpdated(mailbox=snapshot)))

    async def new_version() -> bool:
        view = await app.state.stores.read.mailbox("badpw")
        return bool(view and view.snapshot and view.snapshot.version == 2)

    await eventually(new_version)
    assert (await client.post("/sends", json=mail("badpw", "k2"))).status_code == 202
    await events.wait_for("EmailSent", mailbox_id="badpw")
    assert smtp_clean.messages[0].auth_login == "alice"


async def test_non_ascii_addresses_go_with_smtputf8(
    client: httpx.AsyncClient, seed: Any, smtp_clean: SmtpServer, events: Recorder
) -> None:
    await seed("mbx1")
    body = mail("mbx1", "utf8", to=[{"name": "Jörg", "address": "jörg@bücher.example"}], subject="Straße")
    await client.post("/sends", json=body)
    sent = (await events.wait_for("EmailSent", mailbox_id="mbx1"))[0]["data"]
    assert sent["accepted"] == ["jörg@xn--bcher-kva.example"]  # IDNA domain, UTF-8 local part
    data = smtp_clean.messages[0].data
    assert "jörg@xn--bcher-kva.example".encode() in data


async def test_no_password_in_the_database_or_the_events(
    client: httpx.AsyncClient, app: FastAPI, seed: Any, smtp_clean: SmtpServer, events: Recorder
) -> None:
    canary = "wrong-Pa55-canary"
    await seed("mbx1")
    await seed("badpw", password=canary)
    await client.post("/sends", json=mail("mbx1", "k"))
    await client.post("/sends", json=mail("badpw", "k"))
    await events.wait_for("EmailSent", mailbox_id="mbx1")
    await events.wait_for("EmailSendFailed", mailbox_id="badpw")
    forms = [
        password
        for pw in ("alice-pw", canary)
        for password in (
            pw,
            base64.b64encode(pw.encode()).decode(),
            base64.b64encode(f"\0alice\0{pw}".encode()).decode(),
        )
    ]
    db = app.state.runtime.db
    stored = ""
    for name in await db.list_collection_names():
        stored += repr(await db[name].find({}).to_list(None))
    published = "".join(m.data.decode() for m in events.messages)
    for form in forms:
        assert form not in stored and form not in published


async def test_without_pipelining_the_envelope_goes_command_by_command(
    client: httpx.AsyncClient, seed: Any, smtp_server: SmtpServer, events: Recorder
) -> None:
    smtp_server.clear()
    ports = [smtp_server.port_starttls]
    await seed("plainpipe", port=smtp_server.port_starttls, allowed_ports=ports, profile_id="prof-np")
    smtp_server.refuse_rcpt("gone@example.org")
    to = [{"address": "gone@example.org"}, {"address": "ann@example.org"}]
    await client.post("/sends", json=mail("plainpipe", "k", to=to))
    sent = (await events.wait_for("EmailSent", mailbox_id="plainpipe"))[0]["data"]
    assert sent["accepted"] == ["ann@example.org"] and sent["refused"][0]["reply_code"] == 550
    assert smtp_server.messages[-1].rcpt_tos == ["ann@example.org"]
    smtp_server.clear()


async def test_a_recipient_deferred_with_4xx_is_retried_alone_with_the_stored_backoff(
    client: httpx.AsyncClient, app: FastAPI, seed: Any, smtp_clean: SmtpServer, events: Recorder
) -> None:
    await seed("mbx1")
    smtp_clean.refuse_rcpt("later@example.org", "450 4.2.1 <later@example.org>: Mailbox busy, try later")
    to = [{"address": "ann@example.org"}, {"address": "later@example.org"}]
    assert (await client.post("/sends", json=mail("mbx1", "defer", to=to))).status_code == 202

    async def deferred() -> SendDoc | None:
        doc = await app.state.stores.sends.send("mbx1", "defer")
        return doc if doc and doc.partial and doc.status == "queued" else None

    doc = await eventually(deferred)
    assert doc is not None and doc.partial is not None
    assert doc.partial.accepted == ["ann@example.org"] and doc.next_at > doc.requested_at
    assert [d.address for d in doc.partial.deferred] == ["later@example.org"]
    assert events.of("EmailSent", "mbx1") == []  # not done yet: one recipient waits
    smtp_clean.refused_rcpts.pop("later@example.org")  # the mailbox is free again
    sent = (await events.wait_for("EmailSent", mailbox_id="mbx1"))[0]["data"]
    assert sent["accepted"] == ["ann@example.org", "later@example.org"] and sent["refused"] == []
    assert sent["attempts"] == 2
    assert [m.rcpt_tos for m in smtp_clean.messages] == [["ann@example.org"], ["later@example.org"]]
    first, second = smtp_clean.messages
    assert first.data == second.data  # the same message (Message-ID, Date), to the deferred one only


@pytest.mark.sender_settings(sender_max_attempts=2)
async def test_a_recipient_deferred_until_the_last_attempt_is_reported_refused(
    client: httpx.AsyncClient, seed: Any, smtp_clean: SmtpServer, events: Recorder
) -> None:
    await seed("mbx1")
    smtp_clean.refuse_rcpt("later@example.org", "450 4.2.1 <later@example.org>: Mailbox busy, try later")
    to = [{"address": "ann@example.org"}, {"address": "later@example.org"}]
    await client.post("/sends", json=mail("mbx1", "defer", to=to))
    sent = (await events.wait_for("EmailSent", mailbox_id="mbx1"))[0]["data"]
    assert sent["accepted"] == ["ann@example.org"] and sent["attempts"] == 2
    (refusal,) = sent["refused"]
    assert refusal["address"] == "later@example.org" and refusal["reply_code"] == 450
    assert refusal["permanent"] is False
    assert len(smtp_clean.messages) == 1 and smtp_clean.messages[0].rcpt_tos == ["ann@example.org"]
