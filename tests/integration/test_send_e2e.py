"""Outgoing email end to end: Test & Enable through the public APIs, then sender-svc sends a mail.

The four services and sender-svc in-process on the suite's servers: sender-svc asks mailbox-svc's
``login`` operation for the mailbox's outgoing login (with its service token; purpose ``send``),
logs in to the SMTP server with AUTH, and the mail is accepted once, as the mailbox's user.
"""

from __future__ import annotations

import pytest
from e2e_helpers import E2eFactory
from fastapi import FastAPI

from mailwarden_servers import SmtpServer, TestCertificates, eventually

pytestmark = pytest.mark.integration


async def test_test_and_enable_then_a_mail_goes_out_with_the_mailbox_login(
    smtp_server: SmtpServer, certs: TestCertificates, mail_users: dict[str, str], e2e_stack: E2eFactory
) -> None:
    from sender_svc.app import create_app
    from sender_svc.config import Settings

    def sender() -> dict[str, FastAPI]:
        settings = Settings(
            sender_allow_networks="127.0.0.0/8", sender_ca_file=str(certs.ca), sender_poll_s=0.1
        )
        return {"sender": create_app(settings)}

    user, password = "alice", mail_users["alice"]
    async with e2e_stack(sender, user, password, approve=False) as s:
        http, mailbox_id = s.http, s.mailbox_id
        mail = {
            "mailbox_id": mailbox_id,
            "idempotency_key": f"e2e-{mailbox_id}",
            "to": [{"address": "bob@example.org"}],
            "subject": f"end to end {mailbox_id}",
            "text": "sent with the login mailbox-svc handed over",
        }
        refused = await http["sender"].post("/sends", json=mail)
        assert refused.status_code in (404, 409)  # not enabled for outgoing yet: nothing queued
        await s.approve()
        await s.test_and_enable()

        async def queued() -> bool:
            return (await http["sender"].post("/sends", json=mail)).status_code in (200, 202)

        await eventually(queued, "the mailbox enabled for outgoing email, as sender-svc sees it")

        async def outcome() -> str | None:
            found = (await http["sender"].get(f"/sends/{mailbox_id}/e2e-{mailbox_id}")).json()
            return found["status"] if found["status"] in ("sent", "failed", "uncertain") else None

        status = await eventually(outcome, "the mail's outcome")
        got = (await http["sender"].get(f"/sends/{mailbox_id}/e2e-{mailbox_id}")).json()
    assert status == "sent", got
    mine = [m for m in smtp_server.messages if f"end to end {mailbox_id}".encode() in m.data]
    assert len(mine) == 1 and mine[0].auth_login == user and mine[0].rcpt_tos == ["bob@example.org"]
