"""Notification channels: signed webhooks with retries, email digests, restarts and duplicates."""

from __future__ import annotations

import asyncio
import email
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from alert_svc_helpers import PROFILE_OWNER, mailbox_ref, user
from http_listener import listening
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from alert_svc.channels.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from contracts.errors import ErrorCode
from contracts.models import Owner, OwnerKind
from contracts.testing import status_failed
from mailwarden_servers import eventually, free_port

SECRET = "a-test-secret-of-32-characters!!"


class Receiver:
    """A webhook endpoint that fails the first ``fail_first`` calls and checks every signature."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.calls: list[dict[str, Any]] = []

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        ok = verify(
            SECRET.encode(),
            request.headers.get(TIMESTAMP_HEADER, ""),
            body,
            request.headers.get(SIGNATURE_HEADER, ""),
            int(time.time()),
        )
        self.calls.append({"valid": ok, "body": json.loads(body), "forged": False})
        if len(self.calls) <= self.fail_first:
            return Response(status_code=500)
        return Response(status_code=204 if ok else 401)


@asynccontextmanager
async def http_receiver(receiver: Receiver) -> AsyncIterator[str]:
    port = free_port()
    app = Starlette(routes=[Route("/hook", receiver.endpoint, methods=["POST"])])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    await eventually(lambda: _now(server.started), what="webhook receiver")
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        server.should_exit = True
        await task


async def _now(value: Any) -> Any:
    return value


def reachable(*ports: int) -> dict[str, Any]:
    """Settings letting webhooks reach these local ports (loopback is denied by default)."""
    return {"alert_webhook_allow_networks": "127.0.0.0/8", "alert_webhook_ports": list(ports)}


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


async def test_webhook_signed_retried_and_failures_visible(alert_svc: Any) -> None:
    receiver = Receiver(fail_first=2)
    owner = user("w1")
    gone = free_port()
    async with (
        http_receiver(receiver) as url,
        alert_svc(alert_webhook_max_attempts=3, **reachable(port_of(url), gone)) as h,
    ):
        created = await h.http.post(
            "/webhooks",
            json={
                "url": url,
                "recipient_kind": "user",
                "recipient_id": "admin1",
                "levels": ["error"],
                "secret": SECRET,
            },
        )
        assert created.status_code == 201, created.text
        hook = created.json()
        assert hook["secret"] == SECRET and hook["has_secret"] is True
        assert hook["created_by"] == "token:admin"  # who decided where alerts go: the audit
        listed = (await h.http.get(f"/webhooks/{hook['id']}")).json()
        assert "secret" not in listed  # write-only after creation
        raw = await h.db["webhooks"].find_one({"_id": hook["id"]})
        assert SECRET not in json.dumps(raw, default=str)  # sealed at rest

        # A second hook over NATS request-reply, to a port where nobody listens: it must fail visibly.
        reply = await h.request(
            "mailwarden.rpc.alert-svc.webhooks.create",
            json.dumps({"url": f"http://127.0.0.1:{gone}/gone"}).encode(),
            timeout=5,
        )
        dead = json.loads(reply.data)
        assert dead["ok"] is True and dead["result"]["recipient_kind"] is None

        await h.publish(status_failed(mailbox_ref("wm1", owner), "tw1", ErrorCode.AUTH_FAILED))
        await h.wait_wall(PROFILE_OWNER, 1)

        async def delivered() -> list[dict[str, Any]]:
            got = (
                await h.http.get(f"/webhooks/{hook['id']}/deliveries", params={"state": "delivered"})
            ).json()
            return list(got)

        [delivery] = await eventually(delivered, what="delivery after retries")
        assert delivery["attempts"] == 3 and delivery["last_status"] == 204
        assert [a["error"] for a in delivery["history"]] == ["HTTP 500", "HTTP 500", None]
        assert len(receiver.calls) == 3 and all(c["valid"] for c in receiver.calls)
        body = receiver.calls[-1]["body"]
        assert body["type"] == "AlertRaised" and body["data"]["recipient"]["id"] == "admin1"
        assert body["data"]["test_id"] == "tw1"
        assert delivery["event_id"] == body["id"]

        async def failed_for_good() -> list[dict[str, Any]]:
            reply = await h.request(
                "mailwarden.rpc.alert-svc.webhooks.deliveries",
                json.dumps({"webhook_id": dead["result"]["id"], "state": "failed"}).encode(),
                timeout=5,
            )
            return list(json.loads(reply.data)["result"]["items"])

        failures = await eventually(failed_for_good, what="failed deliveries")
        # The all-alerts hook got both alerts (mailbox owner and profile owner); each tried 3 times.
        assert len(failures) == 2 and all(f["attempts"] == 3 and f["last_error"] for f in failures)
        assert all(f["last_status"] is None for f in failures)


async def test_a_relay_on_a_denied_address_gets_no_connection_and_the_digest_waits(alert_svc: Any) -> None:
    admin = Owner(kind=OwnerKind.USER, id="admin-x", name="Xi Admin", email="admin-x@example.com")
    async with listening() as relay:
        denied = {"alert_smtp_host": "localhost", "alert_smtp_port": relay.port, "alert_smtp_tls": "none"}
        async with alert_svc(alert_digest_interval_s=0.5, alert_majority_min_mailboxes=10, **denied) as h:
            await h.publish(
                status_failed(
                    mailbox_ref("xm1", user("x1", email=False), "prfX", admin), "tx1", ErrorCode.AUTH_FAILED
                )
            )

            async def refused() -> bool:
                docs = await h.db["email_queue"].find({"recipient_key": "user:admin-x"}).to_list(None)
                return bool(docs) and all(
                    d["state"] == "pending" and d["attempts"] and d["last_error"] == "address_not_allowed"
                    for d in docs
                )

            await eventually(refused, what="the digest refused by the egress policy")
        assert relay.accepted == 0  # not one connection to a relay the policy denies


def _mails_to(smtp: Any, address: str) -> list[Any]:
    return [m for m in smtp.messages if address in m.rcpt_tos]


async def test_digest_survives_smtp_outage_and_restart(alert_svc: Any, smtp_server: Any) -> None:
    admin = Owner(kind=OwnerKind.USER, id="admin-d", name="Dee Admin", email="admin-d@example.com")
    owners = [user(f"d{n}", email=False) for n in range(3)]
    down = {
        "alert_smtp_host": "127.0.0.1",
        "alert_smtp_port": free_port(),
        "alert_smtp_tls": "none",
        "alert_smtp_allow_networks": "127.0.0.0/8",
    }
    async with alert_svc(alert_digest_interval_s=0.5, alert_majority_min_mailboxes=10, **down) as h:
        for n, owner in enumerate(owners):
            await h.publish(
                status_failed(mailbox_ref(f"dm{n}", owner, "prfD", admin), f"td{n}", ErrorCode.AUTH_FAILED)
            )
        await h.wait_wall(admin, 3)  # the wall does not wait for the mail channel

        async def tried() -> bool:
            docs = await h.db["email_queue"].find({"recipient_key": "user:admin-d"}).to_list(None)
            return (
                len(docs) == 3
                and all(d["state"] == "pending" for d in docs)
                and any(d["attempts"] for d in docs)
            )

        await eventually(tried, what="failed send attempts")
    assert _mails_to(smtp_server, "admin-d@example.com") == []

    up = {
        "alert_smtp_host": smtp_server.host,
        "alert_smtp_port": smtp_server.port_plain,
        "alert_smtp_tls": "none",
        "alert_smtp_allow_networks": "127.0.0.0/8",  # the local SMTP server, allowed explicitly
    }
    async with alert_svc(alert_digest_interval_s=0.5, alert_majority_min_mailboxes=10, **up) as h:

        async def mailed() -> list[Any]:
            return _mails_to(smtp_server, "admin-d@example.com")

        [mail] = await eventually(mailed, what="digest after restart")
        parsed = email.message_from_bytes(mail.data)
        assert parsed["X-Mailwarden-Alerts"] == "3" and parsed["Subject"] == "[mailwarden] 3 new alerts"
        payload = parsed.get_payload(decode=True)
        assert isinstance(payload, bytes)
        text = payload.decode()
        for n in range(3):
            assert f"dm{n}@example.com" in text and f"test run td{n}" in text

        async def all_sent() -> bool:
            docs = await h.db["email_queue"].find({"recipient_key": "user:admin-d"}).to_list(None)
            return all(d["state"] == "sent" for d in docs)

        await eventually(all_sent, what="queue marked sent")
    assert len(_mails_to(smtp_server, "admin-d@example.com")) == 1


async def test_duplicate_event_makes_one_alert_and_one_notification_each(
    alert_svc: Any, smtp_server: Any
) -> None:
    receiver = Receiver(fail_first=0)
    admin = Owner(kind=OwnerKind.USER, id="admin-i", name="Ida Admin", email="admin-i@example.com")
    owner = user("i1")
    smtp = {
        "alert_smtp_host": smtp_server.host,
        "alert_smtp_port": smtp_server.port_plain,
        "alert_smtp_tls": "none",
        "alert_smtp_allow_networks": "127.0.0.0/8",  # the local SMTP server, allowed explicitly
    }
    async with (
        http_receiver(receiver) as url,
        alert_svc(
            alert_digest_interval_s=0.5, alert_majority_min_mailboxes=10, **smtp, **reachable(port_of(url))
        ) as h,
    ):
        await h.http.post(
            "/webhooks",
            json={"url": url, "recipient_kind": "user", "recipient_id": "admin-i", "secret": SECRET},
        )
        event = status_failed(mailbox_ref("im1", owner, "prfI", admin), "ti1", ErrorCode.AUTH_FAILED)
        first = await h.publish(event)
        await h.publish(event, event_id=first)  # the same envelope (dropped by JetStream's dedupe)
        await h.publish(event)  # the same test under a new envelope id (after the dedupe window)
        marker = status_failed(mailbox_ref("im2", owner, "prfI", admin), "ti2", ErrorCode.INBOX_UNAVAILABLE)
        await h.publish(marker)
        await h.settled()
        await h.wait_wall(admin, 2)
        [alert] = await h.wall(admin, mailbox_id="im1")
        assert alert["count"] == 1

        async def notified() -> bool:
            mails = _mails_to(smtp_server, "admin-i@example.com")
            return len(receiver.calls) >= 2 and len(mails) >= 1

        await eventually(notified, what="webhook and mail")
        await asyncio.sleep(1.5)  # three more digest intervals: room for a duplicate to show up
        assert sorted(c["body"]["data"]["mailbox_id"] for c in receiver.calls) == ["im1", "im2"]
        [mail] = _mails_to(smtp_server, "admin-i@example.com")
        assert email.message_from_bytes(mail.data)["X-Mailwarden-Alerts"] == "2"
        mine = _mails_to(smtp_server, "i1@example.com")
        assert len(mine) == 1 and email.message_from_bytes(mine[0].data)["X-Mailwarden-Alerts"] == "2"
