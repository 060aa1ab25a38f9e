"""The alert rules end to end: fan-out to both owners, dedupe, idempotency, auto-resolve, wall API."""

from __future__ import annotations

import uuid
from typing import Any

from alert_svc_helpers import PROFILE_OWNER, later, mailbox_ref, user

from contracts.errors import ErrorCode
from contracts.testing import status_failed, status_succeeded
from mailwarden_servers import eventually


async def test_error_to_both_owners_dedupes_and_resolves_on_success(alert_svc: Any) -> None:
    owner = user("u1")
    ref = mailbox_ref("mbx1", owner)
    async with alert_svc() as h:
        await h.publish(status_failed(ref, "t1", ErrorCode.AUTH_FAILED, retry_at=later(5)))
        [mine] = await h.wait_wall(owner, 1)
        [theirs] = await h.wait_wall(PROFILE_OWNER, 1)
        for alert in (mine, theirs):
            assert alert["level"] == "error" and alert["state"] == "open" and alert["count"] == 1
            assert alert["code"] == "auth_failed" and alert["direction"] == "incoming"
            assert alert["test_id"] == "t1" and alert["mailbox_id"] == "mbx1"
            assert "Email cannot be received for the mailbox mbx1@example.com" in alert["message"]
            assert "'auth' step" in alert["message"] and "A retry is scheduled" in alert["message"]
            assert alert["remediation"].startswith("Update the mailbox credentials")
        assert mine["id"] != theirs["id"]
        await eventually(lambda: _async(len(h.alerts_seen) >= 2), what="two AlertRaised")
        assert sorted(h.subjects_seen[:2]) == [
            "mailwarden.alerts.user.admin1.error",
            "mailwarden.alerts.user.u1.error",
        ]

        # The same cause again: one alert, counted; the same test re-published: nothing new.
        await h.publish(status_failed(ref, "t2", ErrorCode.AUTH_FAILED))
        await h.publish(status_failed(ref, "t2", ErrorCode.AUTH_FAILED))  # new envelope id, same test
        await h.settled()
        [mine] = await h.wall(owner, level="error")
        assert mine["count"] == 2 and mine["last_test_id"] == "t2" and mine["test_id"] == "t1"
        assert "has been disabled for incoming email" in mine["message"]
        [theirs] = await h.wall(PROFILE_OWNER)
        assert theirs["count"] == 2

        # Next test succeeds: both error alerts resolve themselves; the owner gets an information alert.
        await h.publish(status_succeeded(ref, "t3"))
        await eventually(lambda: _open_errors(h, owner), what="resolution")
        [resolved] = await h.wall(owner, level="error")
        assert resolved["state"] == "resolved" and resolved["resolved_reason"] == "recovered"
        [resolved] = await h.wall(PROFILE_OWNER, state="resolved")
        assert resolved["code"] == "auth_failed"
        infos = await h.wall(owner, level="information", mailbox_id="mbx1")
        assert len(infos) == 1 and infos[0]["code"] == "mailbox_enabled" and infos[0]["test_id"] == "t3"

        def resolved_on_subjects() -> int:
            return [a["data"]["state"] for a in h.alerts_seen if a["data"]["code"] == "auth_failed"].count(
                "resolved"
            )

        await eventually(lambda: _async(resolved_on_subjects() == 2), what="resolved AlertRaised")

        # A new failure after recovery opens a fresh alert instead of reviving the old one.
        await h.publish(status_failed(ref, "t4", ErrorCode.AUTH_FAILED, retry_at=later(5)))
        await h.wait_wall(owner, 2, level="error")
        assert [a["state"] for a in await h.wall(owner, level="error")] == ["open", "resolved"]


async def _async(value: Any) -> Any:
    return value


async def _open_errors(h: Any, owner: Any) -> bool:
    return not await h.wall(owner, level="error", state="open") and not await h.wall(
        PROFILE_OWNER, state="open"
    )


async def test_wall_read_delete_and_pagination(alert_svc: Any) -> None:
    owner = user("u2")
    async with alert_svc() as h:
        for n in range(3):
            await h.publish(status_failed(mailbox_ref(f"mb{n}", owner), f"tp{n}", ErrorCode.AUTH_FAILED))
        await h.wait_wall(owner, 3)
        page1 = (
            await h.http.get("/alerts", params={"recipient_kind": "user", "recipient_id": "u2", "limit": 2})
        ).json()
        assert len(page1["items"]) == 2 and page1["next_cursor"]
        page2 = (
            await h.http.get(
                "/alerts",
                params={
                    "recipient_kind": "user",
                    "recipient_id": "u2",
                    "limit": 2,
                    "cursor": page1["next_cursor"],
                },
            )
        ).json()
        assert len(page2["items"]) == 1 and page2["next_cursor"] is None
        ids = [a["id"] for a in page1["items"] + page2["items"]]
        assert len(set(ids)) == 3

        patched = await h.http.patch(f"/alerts/{ids[0]}", json={"read": True})
        assert patched.status_code == 200 and patched.json()["read"] is True
        assert {a["id"] for a in await h.wall(owner, unread="true")} == set(ids[1:])
        assert (await h.http.delete(f"/alerts/{ids[1]}")).status_code == 204
        assert (await h.http.get(f"/alerts/{ids[1]}")).status_code == 404
        assert (await h.http.get(f"/alerts/{uuid.uuid4()}")).status_code == 404

        # Over NATS request-reply too, then "delete all alerts" for this wall only.
        reply = await h.request(
            "mailwarden.rpc.alert-svc.alerts.list",
            b'{"recipient_kind": "user", "recipient_id": "u2"}',
            timeout=5,
        )
        import json

        body = json.loads(reply.data)
        assert body["ok"] is True and len(body["result"]["items"]) == 2
        deleted = await h.http.delete("/alerts", params={"recipient_kind": "user", "recipient_id": "u2"})
        assert deleted.json() == {"deleted": 2}
        assert await h.wall(owner) == []
        # Another recipient's wall is untouched (3 of 3 mailboxes failing also made the majority alert).
        kinds = sorted(a["kind"] for a in await h.wall(PROFILE_OWNER))
        assert kinds == ["mailbox", "mailbox", "mailbox", "majority"]
