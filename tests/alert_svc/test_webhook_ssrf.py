"""Webhooks through the egress policy: refused at registration, refused again at delivery.

Through the public API of a running alert-svc, with a local listener counting every accepted
connection: no form of an internal address is registered, a hook registered while its address
was allowed is not called once it no longer is, denied and unreachable targets read alike, and
only the lease holder records an attempt.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from alert_svc_helpers import mailbox_ref, user
from http_listener import listening

from alert_svc.channels.webhook import NO_ANSWER
from alert_svc.store.webhooks import Attempt, DeliveryDoc, WebhookStore
from contracts.errors import ErrorCode
from contracts.testing import status_failed
from mailwarden_servers import eventually, free_port

LITERAL_FORMS = [
    "127.0.0.1",
    "0.0.0.0",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.10",
    "169.254.169.254",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:169.254.169.254]",
    "[fe80::1]",
    "[fd00::1]",
    "2130706433",
    "017700000001",
    "0x7f000001",
    "0177.0.0.1",
    "0x7f.0.0.1",
    "127.1",
    "localhost",
]


async def test_every_internal_form_refused_at_registration_alike(alert_svc: Any) -> None:
    async with listening() as listener, alert_svc(alert_webhook_ports=[listener.port]) as h:
        messages: set[str] = set()
        for form in [*LITERAL_FORMS, "nowhere.invalid"]:
            url = f"http://{form}:{listener.port}/hook"
            response = await h.http.post("/webhooks", json={"url": url})
            assert response.status_code == 422, (form, response.text)
            [error] = response.json()["errors"]
            assert error["field"] == "url", (form, error)
            messages.add(error["message"])
        # Private, loopback, metadata and a name that does not resolve: one same answer.
        assert len(messages) == 1, messages
        reply = await h.request(
            "mailwarden.rpc.alert-svc.webhooks.create",
            json.dumps({"url": f"http://0x7f.1:{listener.port}/"}).encode(),
            timeout=5,
        )
        body = json.loads(reply.data)
        assert body["ok"] is False and body["status"] == 422 and body["errors"][0]["field"] == "url"
        other_port = await h.http.post("/webhooks", json={"url": "https://example.com:22/hook"})
        assert other_port.status_code == 422
        assert (await h.http.get("/webhooks")).json() == []
        assert listener.accepted == 0
    print(
        f"\nwebhook registration: {len(LITERAL_FORMS) + 1} URLs → 422 on url with {len(messages)} message,"
        f" {listener.accepted} connections"
    )


async def test_denied_at_delivery_and_alike_unreachable(alert_svc: Any) -> None:
    closed = free_port()
    async with listening() as listener:
        ports = [listener.port, closed]
        hooks: list[str] = []
        async with alert_svc(alert_webhook_allow_networks="127.0.0.0/8", alert_webhook_ports=ports) as h:
            for url in (
                f"http://127.0.0.1:{listener.port}/hook",
                f"http://localhost:{listener.port}/hook",
                f"http://2130706433:{listener.port}/hook",
                f"http://127.0.0.2:{closed}/hook",  # allowed below, but nobody listens
            ):
                response = await h.http.post("/webhooks", json={"url": url})
                assert response.status_code == 201, response.text
                hooks.append(response.json()["id"])
        # The operator narrows the allow-list: the hooks stay registered, and are checked again.
        strict = {"alert_webhook_allow_networks": "127.0.0.2/32", "alert_webhook_ports": ports}
        async with alert_svc(alert_webhook_max_attempts=1, **strict) as h:
            await h.publish(status_failed(mailbox_ref("ssrf1", user("s1")), "ts1", ErrorCode.AUTH_FAILED))

            async def all_failed() -> list[dict[str, Any]] | None:
                found: list[dict[str, Any]] = []
                for hook in hooks:
                    got = await h.http.get(f"/webhooks/{hook}/deliveries", params={"state": "failed"})
                    found += got.json()
                return found if len(found) == 2 * len(hooks) else None

            deliveries = await eventually(all_failed, what="every delivery failed")
            assert listener.accepted == 0
            # Denied (loopback) and unreachable (allowed, closed) read the same to the API caller.
            assert {d["last_error"] for d in deliveries} == {NO_ANSWER}
            assert {d["last_status"] for d in deliveries} == {None}
            assert {a["error"] for d in deliveries for a in d["history"]} == {NO_ANSWER}
            for d in deliveries:
                assert str(listener.port) not in json.dumps(d) and str(closed) not in json.dumps(d)
        print(
            f"\nwebhook delivery after narrowing: {len(deliveries)} deliveries failed alike"
            f" ({sorted({d['last_error'] for d in deliveries})}), {listener.accepted} connections"
        )


async def test_only_the_lease_holder_records_an_attempt(alert_svc: Any) -> None:
    async with alert_svc(alert_channel_poll_s=3600) as h:  # the service's own worker stays out of it
        store = WebhookStore(h.db)
        now = datetime.now(UTC)
        await store.enqueue_delivery(
            DeliveryDoc(
                id="d1", webhook_id="wh1", event_id="e1", alert_id="a1", created_at=now, next_attempt_at=now
            )
        )
        [seen_by_a] = await store.due_deliveries(now, 10)
        lease_a = await store.lease_delivery(seen_by_a, datetime.now(UTC) + timedelta(seconds=0.2))
        assert lease_a is not None
        assert await store.lease_delivery(seen_by_a, datetime.now(UTC) + timedelta(seconds=60)) is None
        await asyncio.sleep(0.3)  # A is slow: its lease runs out, B takes the delivery
        [seen_by_b] = await store.due_deliveries(datetime.now(UTC), 10)
        lease_b = await store.lease_delivery(seen_by_b, datetime.now(UTC) + timedelta(seconds=60))
        assert lease_b is not None

        def attempt(error: str | None) -> Attempt:
            return Attempt(at=datetime.now(UTC), status=None, error=error, duration_ms=1.0)

        assert await store.delivery_attempt(seen_by_b, lease_b, {"last_error": "b"}, attempt("b")) is True
        assert await store.delivery_attempt(seen_by_a, lease_a, {"last_error": "a"}, attempt("a")) is False
        raw = await h.db["webhook_deliveries"].find_one({"_id": "d1"})
        assert raw is not None and raw["attempts"] == 1 and raw["last_error"] == "b"
        assert [a["error"] for a in raw["history"]] == ["b"]


async def test_a_redirect_to_an_internal_address_is_not_followed(alert_svc: Any) -> None:
    async with (
        listening() as inside,
        listening("127.0.0.2", "redirect", redirect_to=f"http://127.0.0.1:{inside.port}/hook") as outside,
    ):
        allowed = {"alert_webhook_allow_networks": "127.0.0.2/32", "alert_webhook_ports": [outside.port]}
        async with alert_svc(alert_webhook_max_attempts=1, **allowed) as h:
            created = await h.http.post("/webhooks", json={"url": f"http://127.0.0.2:{outside.port}/hook"})
            assert created.status_code == 201, created.text
            await h.publish(status_failed(mailbox_ref("ssrf2", user("s2")), "ts2", ErrorCode.AUTH_FAILED))

            async def failed_ones() -> list[dict[str, Any]] | None:
                got = await h.http.get(
                    f"/webhooks/{created.json()['id']}/deliveries", params={"state": "failed"}
                )
                items: list[dict[str, Any]] = got.json()
                return items if len(items) == 2 else None

            deliveries = await eventually(failed_ones, what="the redirected deliveries")
            assert {d["last_status"] for d in deliveries} == {302}
            assert outside.accepted == 2 and inside.accepted == 0
