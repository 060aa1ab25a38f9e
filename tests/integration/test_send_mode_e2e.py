"""The outgoing test's send mode end to end: chosen as a profile default and per test (HTTP, RPC,
CLI), the SMTP server delivers the message into Dovecot, and the incoming test finds and deletes it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import nats
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from mailwarden_runtime.auth import bearer_header
from mailwarden_runtime.auth.bootstrap import issue_on, issue_token
from mailwarden_servers import DovecotServer, SmtpServer, TestCertificates
from mailwarden_servers.waiting import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def delivering_smtp(dovecot: DovecotServer, certs: TestCertificates) -> Iterator[SmtpServer]:
    """An SMTP server that stores what it accepts in the recipient's Dovecot INBOX."""
    with SmtpServer(certs, dovecot.users, deliver=dovecot.deliver_address) as server:
        yield server


@pytest.fixture
async def apps(
    mailwarden_services: Callable[[], AbstractAsyncContextManager[dict[str, FastAPI]]],
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    async with mailwarden_services() as running:
        clients = {
            name: httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://svc",
                headers=bearer_header(app.state.token),
            )
            for name, app in running.items()
        }
        yield clients
        for client in clients.values():
            await client.aclose()


async def _runs_after(mailboxes: httpx.AsyncClient, mailbox_id: str, n: int) -> list[dict[str, Any]]:
    async def runs() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = (await mailboxes.get(f"/mailboxes/{mailbox_id}/tests")).json()["items"]
        return items if len(items) >= n else None

    found: list[dict[str, Any]] = await eventually(runs, f"test run #{n} of {mailbox_id}")
    return found


def _mode(run: dict[str, Any]) -> tuple[str, Any]:
    envelope = next(s for s in run["result"]["outgoing"]["steps"] if s["name"] == "envelope")
    found = [s["facts"] for s in run["result"]["incoming"]["steps"] if s["name"] == "find_message"]
    return envelope["facts"]["mode"], (found[0]["found"], found[0]["deleted"]) if found else None


async def test_send_mode_from_the_profile_and_per_test(
    apps: dict[str, httpx.AsyncClient],
    dovecot: DovecotServer,
    delivering_smtp: SmtpServer,
    new_mail_user: Callable[..., tuple[str, str]],
    nats_url: str,
) -> None:
    profiles, mailboxes = apps["profile"], apps["mailbox"]
    settings = (await profiles.get("/settings")).json()
    writable = {"default_profile_id", "incoming_delivery", "outgoing_delivery", "act_delivery",
                "approved_users_only", "approved_queues_only", "alert_levels", "notify_mailbox_owner"}  # fmt: skip
    body = {k: v for k, v in settings.items() if k in writable}
    body.update(port_preset="custom", allowed_ports=[dovecot.imaps_port, delivering_smtp.port_starttls])
    assert (await profiles.put("/settings", json=body)).status_code == 200

    user, password = new_mail_user()
    delivering_smtp.set_password(user, password)
    owner = {"kind": "user", "id": user, "name": user, "email": f"{user}@mail.test"}
    r = await profiles.post(
        "/profiles",
        json={
            "name": f"send {uuid.uuid4().hex[:6]}",
            "owner": owner,
            "incoming_protocol": "imap",
            "incoming": {"host": "127.0.0.1", "port": dovecot.imaps_port, "tls": "implicit"},
            "use_same_settings_for_outgoing": False,
            "outgoing": {"host": "127.0.0.1", "port": delivering_smtp.port_starttls, "tls": "starttls"},
            "advanced": {"smtp_mode": "send"},
        },
    )
    assert r.status_code == 201 and r.json()["advanced"]["smtp_mode"] == "send", r.text
    mailbox = {
        "mailbox_id": f"send-{user}",
        "email": f"{user}@mail.test",
        "owner": owner,
        "profile_id": r.json()["profile_id"],
        "credentials": {"username": user, "password": password},
    }
    assert (await mailboxes.post("/mailboxes", json=mailbox)).status_code == 201
    mid = mailbox["mailbox_id"]
    assert (await mailboxes.post("/mailboxes/approve", json={"mailbox_ids": [mid]})).status_code == 200

    # 1. the profile's default (HTTP Test & Enable): a real message, found and deleted
    assert (await mailboxes.post(f"/mailboxes/{mid}/test")).status_code == 202
    runs = await _runs_after(mailboxes, mid, 1)
    assert runs[0]["outcome"] == "success", runs[0]
    assert _mode(runs[0]) == ("send", (True, True))
    assert len(delivering_smtp.messages) == 1 and b"X-Mailwarden-Test" in delivering_smtp.messages[0].data

    # 2. per test over RPC: a dry run this time, nothing sent
    nc = await nats.connect(nats_url)
    try:
        msg = await nc.request(
            "mailwarden.rpc.mailbox-svc.test",
            json.dumps({"mailbox_id": mid, "smtp_mode": "dry_run"}).encode(),
            timeout=10,
            headers=bearer_header(await issue_on(nc)),
        )
        assert json.loads(msg.data)["ok"], msg.data
    finally:
        await nc.close()
    runs = await _runs_after(mailboxes, mid, 2)
    assert _mode(runs[0]) == ("dry_run", None) and len(delivering_smtp.messages) == 1

    # 3. per test over HTTP (bulk body) and the CLI: send again
    r = await mailboxes.post("/mailboxes/test", json={"mailbox_ids": [mid], "smtp_mode": "dry_run"})
    assert r.status_code == 202, r.text
    runs = await _runs_after(mailboxes, mid, 3)
    assert _mode(runs[0])[0] == "dry_run"
    r = await mailboxes.post(f"/mailboxes/{mid}/test", json={"smtp_mode": "dry_run"})
    assert r.status_code == 202, r.text
    runs = await _runs_after(mailboxes, mid, 4)
    assert _mode(runs[0])[0] == "dry_run" and len(delivering_smtp.messages) == 1

    from mailwarden_cli.main import app

    token = await issue_token(nats_url)

    def cli() -> Any:
        return CliRunner().invoke(
            app, ["--nats-url", nats_url, "mailbox", "test", mid, "--smtp-mode", "send", "--wait"],
            env={"COLUMNS": "200", "MW_TOKEN": token, "MW_TOKEN_FILE": "/dev/null"},
        )  # fmt: skip

    result = await asyncio.to_thread(cli)
    assert result.exit_code == 0, result.stdout + result.stderr
    runs = await _runs_after(mailboxes, mid, 5)
    assert _mode(runs[0]) == ("send", (True, True)) and len(delivering_smtp.messages) == 2
