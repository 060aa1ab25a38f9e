"""Mailbox owners: their own mailbox and their own alerts wall, nobody else's (two owners, one system)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import httpx
import nats
import pytest
from fastapi import FastAPI

from mailwarden_runtime.auth import Role, bearer_header
from mailwarden_runtime.auth.bootstrap import issue_token
from mailwarden_servers import DovecotServer, SmtpServer

from ..integration.test_flow import eventually

pytestmark = pytest.mark.integration


@dataclass
class Owners:
    apps: dict[str, FastAPI]
    nats_url: str
    admin: str
    alice: str
    bob: str
    mailboxes: dict[str, str]  # owner -> mailbox id

    def client(self, name: str, token: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.apps[name])
        return httpx.AsyncClient(transport=transport, base_url="http://svc", headers=bearer_header(token))


def _owner(oid: str) -> dict[str, str]:
    return {"kind": "user", "id": oid, "name": oid, "email": f"{oid}@example.org"}


@pytest.fixture(scope="module")
async def owners(
    nats_url: str,
    dovecot: DovecotServer,
    smtp_server: SmtpServer,
    mailwarden_services: Callable[[], AbstractAsyncContextManager[dict[str, FastAPI]]],
) -> AsyncIterator[Owners]:
    tag = uuid.uuid4().hex[:6]
    alice, bob = f"alice{tag}", f"bob{tag}"
    async with mailwarden_services() as apps:
        o = Owners(
            apps,
            nats_url,
            apps["profile"].state.token,
            await issue_token(nats_url, alice, [Role.MAILBOX_OWNER]),
            await issue_token(nats_url, bob, [Role.MAILBOX_OWNER]),
            {},
        )
        async with o.client("profile", o.admin) as profiles, o.client("mailbox", o.admin) as mailboxes:
            settings = (await profiles.get("/settings")).json()
            keep = {"default_profile_id", "incoming_delivery", "outgoing_delivery", "act_delivery"}
            body = {k: v for k, v in settings.items() if k in keep}
            body |= {
                "port_preset": "custom",
                "allowed_ports": [dovecot.imaps_port, smtp_server.port_starttls],
            }
            assert (await profiles.put("/settings", json=body)).status_code == 200
            resp = await profiles.post(
                "/profiles",
                json={
                    "name": f"owners {tag}",
                    "owner": _owner(f"padmin{tag}"),
                    "incoming_protocol": "imap",
                    "incoming": {"host": "127.0.0.1", "port": dovecot.imaps_port, "tls": "implicit"},
                    "use_same_settings_for_outgoing": False,
                    "outgoing": {"host": "127.0.0.1", "port": smtp_server.port_starttls, "tls": "starttls"},
                },
            )
            profile_id = resp.json()["profile_id"]
            for who in (alice, bob):

                async def created(who: str = who) -> bool:
                    r = await mailboxes.post(
                        "/mailboxes",
                        json={
                            "mailbox_id": f"m-{who}",
                            "email": f"{who}@mail.test",
                            "owner": _owner(who),
                            "profile_id": profile_id,
                            "credentials": {"username": "alice", "password": "wrong-on-purpose"},
                        },
                    )
                    return r.status_code == 201

                await eventually(created, "mailbox-svc to know the profile")
                o.mailboxes[who] = f"m-{who}"
            ids = list(o.mailboxes.values())
            await mailboxes.post("/mailboxes/approve", json={"mailbox_ids": ids})
            assert (await mailboxes.post("/mailboxes/test", json={"mailbox_ids": ids})).status_code == 202
        async with o.client("alert", o.admin) as alerts:
            for who in (alice, bob):

                async def alerted(who: str = who) -> Any:
                    r = await alerts.get("/alerts", params={"recipient_kind": "user", "recipient_id": who})
                    return r.json()["items"]

                await eventually(alerted, f"an alert on {who}'s wall", timeout=60)
        yield o


async def test_the_alerts_wall_shows_an_owner_only_their_own(owners: Owners) -> None:
    alice, bob = (k for k in owners.mailboxes)
    async with owners.client("alert", owners.alice) as as_alice, owners.client("alert", owners.bob) as as_bob:
        mine = (await as_alice.get("/alerts")).json()["items"]  # no filter: the own wall
        assert mine and {a["recipient"]["id"] for a in mine} == {alice}
        assert {a["recipient"]["id"] for a in (await as_bob.get("/alerts")).json()["items"]} == {bob}
        other = {"recipient_kind": "user", "recipient_id": bob}
        assert (await as_alice.get("/alerts", params=other)).status_code == 403
        assert (await as_alice.delete("/alerts", params=other)).status_code == 403
        bobs = (await as_bob.get("/alerts")).json()["items"][0]["id"]
        assert (await as_alice.get(f"/alerts/{bobs}")).status_code == 403
        assert (await as_alice.patch(f"/alerts/{bobs}", json={"read": True})).status_code == 403
        assert (await as_alice.delete(f"/alerts/{bobs}")).status_code == 403
        assert (await as_bob.get(f"/alerts/{bobs}")).status_code == 200
        prefs = f"/recipients/user/{bob}/preferences"
        assert (await as_alice.get(prefs)).status_code == 403
        # notification preferences are channels (channels:read/write): the administrators'
        assert (await as_alice.get(f"/recipients/user/{alice}/preferences")).status_code == 403
        assert (await as_alice.get("/webhooks")).status_code == 403
    nc = await nats.connect(owners.nats_url)
    try:
        reply = await nc.request(
            "mailwarden.rpc.alert-svc.alerts.list", b"{}", timeout=10, headers=bearer_header(owners.alice)
        )
        items = json.loads(reply.data)["result"]["items"]
        assert items and {a["recipient"]["id"] for a in items} == {alice}
        reply = await nc.request(
            "mailwarden.rpc.alert-svc.alerts.list",
            json.dumps({"recipient_kind": "user", "recipient_id": bob}).encode(),
            timeout=10,
            headers=bearer_header(owners.alice),
        )
        assert json.loads(reply.data)["status"] == 403
    finally:
        await nc.close()


async def test_an_owner_reaches_only_their_own_mailbox_and_only_its_passwords(owners: Owners) -> None:
    alice, bob = (k for k in owners.mailboxes)
    mine, theirs = owners.mailboxes[alice], owners.mailboxes[bob]
    async with owners.client("mailbox", owners.alice) as as_alice:
        assert (await as_alice.get(f"/mailboxes/{mine}")).status_code == 200
        assert (await as_alice.get(f"/mailboxes/{theirs}")).status_code == 403
        assert (await as_alice.get(f"/mailboxes/{theirs}/tests")).status_code == 403
        assert (await as_alice.get("/mailboxes")).status_code == 403  # the list is the admins'
        new_pw = {"credentials": {"username": "alice", "password": "alice-pw"}}
        assert (await as_alice.patch(f"/mailboxes/{mine}", json=new_pw)).status_code == 200
        assert (await as_alice.patch(f"/mailboxes/{theirs}", json=new_pw)).status_code == 403
        assert (await as_alice.patch(f"/mailboxes/{mine}", json={"email": "x@mail.test"})).status_code == 403
        assert (await as_alice.post(f"/mailboxes/{theirs}/test")).status_code == 403
        assert (await as_alice.post("/mailboxes/approve", json={"mailbox_ids": [mine]})).status_code == 403
    async with owners.client("mailbox", owners.admin) as admin:
        view = (await admin.get(f"/mailboxes/{mine}")).json()
        assert view["credentials"]["has_password"] is True
        doc = await owners.apps["mailbox"].state.runtime.db["mailboxes"].find_one({"_id": mine})
        assert doc["updated_by"] == f"token:{alice}"  # the audit field names the owner who changed it


async def test_the_audit_route_names_who_changed_what_and_is_the_auditors(owners: Owners) -> None:
    async with (
        owners.client("profile", owners.admin) as as_admin,
        owners.client("profile", owners.alice) as as_alice,
    ):
        r = await as_admin.get("/audit", params={"actor": "token:admin", "since_hours": 1, "limit": 1000})
        assert r.status_code == 200, r.text
        mine = {
            (e["event"], e["ids"].get("mailbox_id"))
            for e in r.json()["items"]
            if e["ids"].get("mailbox_id") in owners.mailboxes.values()
        }
        for mailbox_id in owners.mailboxes.values():  # created and approved by the administrator
            assert {("MailboxCreated", mailbox_id), ("MailboxApproved", mailbox_id)} <= mine
        assert all(e["actor"] == "token:admin" for e in r.json()["items"])
        assert (await as_alice.get("/audit")).status_code == 403  # audit:read: auditors and administrators


async def test_alert_channel_and_wall_changes_name_their_actor_in_the_document_event_and_audit(
    owners: Owners,
) -> None:
    """Webhooks, preferences, read marks and deletions: each stored with who made it, published
    with them as the actor, and listed by the audit. Last in this module: it empties the walls."""
    alice, bob = (k for k in owners.mailboxes)
    db = owners.apps["alert"].state.runtime.db
    nc = await nats.connect(owners.nats_url)
    js = nc.jetstream()
    try:
        async with (
            owners.client("alert", owners.alice) as as_alice,
            owners.client("alert", owners.admin) as admin,
        ):
            alert_id = (await as_alice.get("/alerts")).json()["items"][0]["id"]
            assert (await as_alice.patch(f"/alerts/{alert_id}", json={"read": True})).status_code == 200
            assert (await as_alice.delete(f"/alerts/{alert_id}")).status_code == 204
            hook = await admin.post(
                "/webhooks",
                json={
                    "url": "https://1.1.1.1/hooks/t0ken-in-the-path?key=secret",
                    "recipient_kind": "user",
                    "recipient_id": f"nobody{alice}",
                },
            )
            assert hook.status_code == 201, hook.text
            webhook_id = hook.json()["id"]
            assert (await admin.delete(f"/webhooks/{webhook_id}")).status_code == 204
            assert (await admin.get(f"/webhooks/{webhook_id}")).status_code == 404
            assert webhook_id not in {h["id"] for h in (await admin.get("/webhooks")).json()}
            prefs = {"email_levels": ["error"], "email": f"{bob}@example.org"}
            assert (await admin.put(f"/recipients/user/{bob}/preferences", json=prefs)).status_code == 200
            wall = {"recipient_kind": "user", "recipient_id": bob}
            cleared = await admin.delete("/alerts", params=wall)
            assert cleared.status_code == 200 and cleared.json()["deleted"] >= 1

        # the stored documents keep who did it
        stored = await db["alerts"].find_one({"_id": alert_id})
        assert stored["read_by"] == stored["deleted_by"] == f"token:{alice}"
        assert await db["alerts"].count_documents(
            {"recipient_key": f"user:{bob}", "deleted_by": "token:admin"}
        )
        removed = await db["webhooks"].find_one({"_id": webhook_id})
        assert removed["created_by"] == removed["deleted_by"] == "token:admin" and removed["deleted"]
        assert (await db["recipient_preferences"].find_one({"_id": f"user:{bob}"}))[
            "updated_by"
        ] == "token:admin"

        # the events, with their actor, as JetStream keeps them (one each: copies share one id)
        async def stored_events() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for subject in ("mailwarden.channels.>", "mailwarden.wall.>"):
                sub = await js.subscribe(subject, ordered_consumer=True)
                try:
                    while True:
                        try:
                            msg = await sub.next_msg(timeout=0.5)
                        except TimeoutError:
                            break
                        out.append(json.loads(msg.data) | {"subject": msg.subject})
                finally:
                    await sub.unsubscribe()
            return out

        def mine(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
            found: dict[str, list[dict[str, Any]]] = {}
            for e in events:
                d = e["data"]
                if (
                    d.get("webhook_id") == webhook_id
                    or d.get("alert_id") == alert_id
                    or d.get("recipient_id") == bob
                ):
                    found.setdefault(e["type"], []).append(e)
            return found

        wanted = {
            "AlertMarkedRead",
            "WebhookRegistered",
            "WebhookRemoved",
            "AlertPreferencesChanged",
            "AlertsDeleted",
        }

        async def published() -> Any:
            found = mine(await stored_events())
            return found if set(found) == wanted and len(found["AlertsDeleted"]) == 2 else None

        events = await eventually(published, "the five kinds of change published", timeout=20)
        assert [e["actor"] for e in events["AlertMarkedRead"]] == [f"token:{alice}"]
        assert events["AlertMarkedRead"][0]["data"]["read"] is True
        assert sorted(e["actor"] for e in events["AlertsDeleted"]) == sorted(
            [f"token:{alice}", "token:admin"]
        )
        registered = events["WebhookRegistered"][0]
        assert registered["actor"] == "token:admin" and registered["data"]["host"] == "1.1.1.1"
        assert "t0ken" not in json.dumps(registered) and "secret" not in json.dumps(registered)
        assert events["WebhookRemoved"][0]["actor"] == "token:admin"
        changed = events["AlertPreferencesChanged"][0]
        assert changed["actor"] == "token:admin" and changed["data"]["email_levels"] == ["error"]
        assert {e["subject"] for e in events["AlertsDeleted"]} == {"mailwarden.wall.deleted"}

        # and the audit lists them (GET /audit reads MW_CONFIG and MW_ALERTS too)
        async with owners.client("profile", owners.admin) as as_admin:
            r = await as_admin.get("/audit", params={"since_hours": 1, "limit": 1000})
            assert r.status_code == 200, r.text
            trail = {
                (e["event"], e["actor"])
                for e in r.json()["items"]
                if webhook_id in e["ids"].values()
                or alert_id in e["ids"].values()
                or bob in e["ids"].values()
            }
        assert {
            ("AlertMarkedRead", f"token:{alice}"),
            ("AlertsDeleted", f"token:{alice}"),
            ("AlertsDeleted", "token:admin"),
            ("WebhookRegistered", "token:admin"),
            ("WebhookRemoved", "token:admin"),
            ("AlertPreferencesChanged", "token:admin"),
        } <= trail
    finally:
        await nc.close()
