"""Outgoing email end to end: Test & Enable through the public APIs, then sender-svc sends a mail.

The four services and sender-svc in-process on the suite's servers: sender-svc asks mailbox-svc's
``login`` operation for the mailbox's outgoing login (with its service token; purpose ``send``),
logs in to the SMTP server with AUTH, and the mail is accepted once, as the mailbox's user.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack

import httpx
import pytest
from fastapi import FastAPI

from mailwarden_runtime.auth import bearer_header
from mailwarden_servers import DovecotServer, SmtpServer, TestCertificates, eventually

pytestmark = pytest.mark.integration


async def test_test_and_enable_then_a_mail_goes_out_with_the_mailbox_login(
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
    certs: TestCertificates,
    mail_users: dict[str, str],
    mailwarden_services: Callable[[], AbstractAsyncContextManager[dict[str, FastAPI]]],
) -> None:
    from sender_svc.app import create_app
    from sender_svc.config import Settings

    user, password = "alice", mail_users["alice"]
    tag = uuid.uuid4().hex[:8]
    async with mailwarden_services() as apps, AsyncExitStack() as stack:
        # The env the fixture set (database prefix, key rings) is sender-svc's too.
        sender = create_app(
            Settings(sender_allow_networks="127.0.0.0/8", sender_ca_file=str(certs.ca), sender_poll_s=0.1)
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
        mail = {
            "mailbox_id": mailbox_id,
            "idempotency_key": f"e2e-{tag}",
            "to": [{"address": "bob@example.org"}],
            "subject": f"end to end {tag}",
            "text": "sent with the login mailbox-svc handed over",
        }
        refused = await http["sender"].post("/sends", json=mail)
        assert refused.status_code in (404, 409)  # not enabled for outgoing yet: nothing queued
        assert (
            await http["mailbox"].post("/mailboxes/approve", json={"mailbox_ids": [mailbox_id]})
        ).status_code == 200
        assert (await http["mailbox"].post(f"/mailboxes/{mailbox_id}/test")).status_code == 202

        async def queued() -> bool:
            return (await http["sender"].post("/sends", json=mail)).status_code in (200, 202)

        await eventually(queued, "the mailbox enabled for outgoing email, as sender-svc sees it")

        async def outcome() -> str | None:
            found = (await http["sender"].get(f"/sends/{mailbox_id}/e2e-{tag}")).json()
            return found["status"] if found["status"] in ("sent", "failed", "uncertain") else None

        status = await eventually(outcome, "the mail's outcome")
        got = (await http["sender"].get(f"/sends/{mailbox_id}/e2e-{tag}")).json()
    assert status == "sent", got
    mine = [m for m in smtp_server.messages if f"end to end {tag}".encode() in m.data]
    assert len(mine) == 1 and mine[0].auth_login == user and mine[0].rcpt_tos == ["bob@example.org"]
