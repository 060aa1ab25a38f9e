"""The walking skeleton end to end: four services, real NATS, Mongo-wire, Dovecot and SMTP servers.

profile → mailbox with credentials → approve → Test & Enable → tester logs in for real →
statuses stored, mailbox enabled or not → alerts on the walls and on the recipients' subjects.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import nats
import pytest
from fastapi import FastAPI

from mailwarden_runtime.auth import bearer_header
from mailwarden_servers import DovecotServer, SmtpServer, eventually

pytestmark = pytest.mark.integration


@dataclass
class System:
    profiles: httpx.AsyncClient
    mailboxes: httpx.AsyncClient
    alerts: httpx.AsyncClient
    tester: httpx.AsyncClient
    nats_url: str
    alert_messages: list[dict[str, Any]]


@pytest.fixture
async def system(
    nats_url: str,
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
    mailwarden_services: Callable[[], AbstractAsyncContextManager[dict[str, FastAPI]]],
) -> AsyncIterator[System]:
    """All four services in-process; the org allows the test servers' ports."""
    alert_messages: list[dict[str, Any]] = []
    nc = await nats.connect(nats_url)

    async def on_alert(msg: Any) -> None:
        alert_messages.append({"subject": msg.subject, **json.loads(msg.data)})

    await nc.subscribe("mailwarden.alerts.>", cb=on_alert)
    async with mailwarden_services() as apps, AsyncExitStack() as stack:
        clients = {}
        for name, app in apps.items():
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://svc",
                headers=bearer_header(app.state.token),
            )
            clients[name] = await stack.enter_async_context(client)
        settings = await clients["profile"].get("/settings")
        body = {**settings.json(), "port_preset": "custom"}
        body["allowed_ports"] = [
            dovecot.imaps_port,
            dovecot.pop3s_port,
            dovecot.imap_port,
            smtp_server.port_starttls,
            smtp_server.port_tls,
        ]
        body = {k: v for k, v in body.items() if k in _SETTINGS_FIELDS}
        resp = await clients["profile"].put("/settings", json=body)
        assert resp.status_code == 200, resp.text
        yield System(
            clients["profile"],
            clients["mailbox"],
            clients["alert"],
            clients["tester"],
            nats_url,
            alert_messages,
        )
    await nc.close()


_SETTINGS_FIELDS = {
    "default_profile_id", "incoming_delivery", "outgoing_delivery", "act_delivery", "approved_users_only",
    "approved_queues_only", "alert_levels", "notify_mailbox_owner", "port_preset", "allowed_ports",
}  # fmt: skip


def owner(kind: str, oid: str) -> dict[str, str]:
    return {"kind": kind, "id": oid, "name": f"{kind} {oid}", "email": f"{oid}@example.org"}


async def create_profile(sys_: System, protocol: str, host_port: int, smtp_port: int, tag: str) -> str:
    resp = await sys_.profiles.post(
        "/profiles",
        json={
            "name": f"{protocol} {tag}",
            "owner": owner("user", f"padmin{tag}"),
            "incoming_protocol": protocol,
            "incoming": {"host": "127.0.0.1", "port": host_port, "tls": "implicit"},
            "use_same_settings_for_outgoing": False,
            "outgoing": {"host": "127.0.0.1", "port": smtp_port, "tls": "starttls"},
        },
    )
    assert resp.status_code == 201, resp.text
    profile_id: str = resp.json()["profile_id"]
    return profile_id


async def create_mailbox(sys_: System, profile_id: str, user: str, password: str, tag: str) -> str:
    """At once after the profile: mailbox-svc asks profile-svc when its read model lags (issue #18)."""
    resp = await sys_.mailboxes.post(
        "/mailboxes",
        json={
            "mailbox_id": f"mbx{tag}",
            "email": f"{user}@mail.test",
            "owner": owner("user", f"owner{tag}"),
            "profile_id": profile_id,
            "credentials": {"username": user, "password": password},
        },
    )
    assert resp.status_code == 201, resp.text
    return f"mbx{tag}"


async def run_test_and_wait(sys_: System, mailbox_id: str) -> dict[str, Any]:
    resp = await sys_.mailboxes.post("/mailboxes/approve", json={"mailbox_ids": [mailbox_id]})
    assert resp.status_code == 200, resp.text
    resp = await sys_.mailboxes.post(f"/mailboxes/{mailbox_id}/test")
    assert resp.status_code == 202, resp.text

    async def tested() -> dict[str, Any] | None:
        mbx = (await sys_.mailboxes.get(f"/mailboxes/{mailbox_id}")).json()
        done = mbx["incoming_status"] != "not_run" and mbx["outgoing_status"] != "not_run"
        return mbx if done and not mbx.get("test_scheduled") else None

    result: dict[str, Any] = await eventually(tested, "the test result")
    return result


async def wall(sys_: System, kind: str, rid: str) -> list[dict[str, Any]]:
    resp = await sys_.alerts.get("/alerts", params={"recipient_kind": kind, "recipient_id": rid})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    items: list[dict[str, Any]] = body["items"] if isinstance(body, dict) else body
    return items


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
async def test_flow_success_enables_mailbox_and_tells_its_owner(
    system: System, dovecot: DovecotServer, smtp_server: SmtpServer, protocol: str
) -> None:
    tag = uuid.uuid4().hex[:8]
    port = dovecot.imaps_port if protocol == "imap" else dovecot.pop3s_port
    profile_id = await create_profile(system, protocol, port, smtp_server.port_starttls, tag)
    mailbox_id = await create_mailbox(system, profile_id, "alice", "alice-pw", tag)

    mbx = await run_test_and_wait(system, mailbox_id)
    assert (mbx["incoming_status"], mbx["outgoing_status"]) == ("success", "success")
    assert mbx["enabled_incoming"] and mbx["enabled_outgoing"]

    runs = (await system.mailboxes.get(f"/mailboxes/{mailbox_id}/tests")).json()
    runs = runs["items"] if isinstance(runs, dict) else runs
    steps = [s["name"] for s in runs[0]["result"]["incoming"]["steps"]]
    assert "tls" in " ".join(steps) and any("auth" in s or "login" in s for s in steps)

    async def owner_informed() -> list[dict[str, Any]]:
        return [a for a in await wall(system, "user", f"owner{tag}") if a["level"] == "information"]

    info = await eventually(owner_informed, "the success alert")
    assert info[0]["mailbox_id"] == mailbox_id
    assert [a for a in await wall(system, "user", f"padmin{tag}") if a["level"] == "error"] == []
    await eventually(
        lambda: _async(
            [
                m
                for m in system.alert_messages
                if m["subject"].startswith(f"mailwarden.alerts.user.owner{tag}.")
            ]
        ),
        "the alert on the owner's subject",
    )


async def test_flow_wrong_password_fails_and_alerts_both_owners(
    system: System, dovecot: DovecotServer, smtp_server: SmtpServer
) -> None:
    tag = uuid.uuid4().hex[:8]
    profile_id = await create_profile(system, "imap", dovecot.imaps_port, smtp_server.port_starttls, tag)
    mailbox_id = await create_mailbox(system, profile_id, "bob", "not-bobs-password", tag)

    mbx = await run_test_and_wait(system, mailbox_id)
    assert mbx["incoming_status"] == "failure" and mbx["outgoing_status"] == "failure"
    assert not mbx["enabled_incoming"] and not mbx["enabled_outgoing"]
    assert mbx["last_error"]["code"] == "auth_failed"

    for rid in (f"owner{tag}", f"padmin{tag}"):

        async def errors(rid: str = rid) -> list[dict[str, Any]]:
            return [a for a in await wall(system, "user", rid) if a["level"] == "error"]

        found = await eventually(errors, f"an error alert for {rid}")
        assert any(a["code"] == "auth_failed" and a["mailbox_id"] == mailbox_id for a in found)
        subject = f"mailwarden.alerts.user.{rid}.error"
        await eventually(
            lambda subject=subject: _async([m for m in system.alert_messages if m["subject"] == subject]),
            f"the alert on {subject}",
        )
    dumped = json.dumps(system.alert_messages)
    assert "not-bobs-password" not in dumped


@pytest.mark.parametrize(
    ("client", "path", "body", "field"),
    [
        ("profiles", "/profiles", {"name": "x", "incoming_protocol": "imap", "incoming": {"host": "h", "port": 0}}, "incoming.port"),
        ("mailboxes", "/mailboxes", {"email": "not-an-address", "owner": {"kind": "user", "id": "u1", "name": "U"}}, "email"),
        ("alerts", "/webhooks", {"url": "not a url"}, "url"),
    ],
)  # fmt: skip
async def test_bad_requests_answer_422_naming_the_field_and_store_nothing(
    system: System, client: str, path: str, body: dict[str, Any], field: str
) -> None:
    http: httpx.AsyncClient = getattr(system, client)
    before = (await http.get(path)).json()
    resp = await http.post(path, json=body)
    assert resp.status_code == 422
    fields = [e["field"] for e in resp.json()["errors"]]
    assert field in fields, fields
    assert (await http.get(path)).json() == before


async def _async(value: Any) -> Any:
    return value
