"""Bad requests get 422 with the field named, over HTTP and NATS, and change nothing."""

from __future__ import annotations

import json
from typing import Any

BAD_QUERIES = [
    ({"level": "fatal"}, "query.level"),
    ({"limit": "0"}, "query.limit"),
    ({"limit": "500"}, "query.limit"),
    ({"unread": "maybe"}, "query.unread"),
    ({"recipient_kind": "robot", "recipient_id": "u1"}, "query.recipient_kind"),
    ({"recipient_kind": "user"}, "recipient_id"),
    ({"mailbox_id": "no spaces"}, "query.mailbox_id"),
    ({"cursor": "not-a-cursor"}, "cursor"),
    ({"colour": "red"}, "query.colour"),
]


async def test_bad_requests_answer_422_and_store_nothing(alert_svc: Any) -> None:
    async with alert_svc() as h:
        for params, field in BAD_QUERIES:
            response = await h.http.get("/alerts", params=params)
            assert response.status_code == 422, (params, response.text)
            body = response.json()
            assert body["detail"] and field in [e["field"] for e in body["errors"]], (params, body)
        secret_like = "s3cr3t-value-never-echoed"
        bad_bodies = [
            ("post", "/webhooks", {"url": "ftp://example.com/x"}, "url"),
            ("post", "/webhooks", {"url": "http://example.com/x", "levels": ["fatal"]}, "levels.0"),
            ("post", "/webhooks", {"url": "http://example.com/x", "secret": "short"}, "secret"),
            ("post", "/webhooks", {"url": "http://example.com/x", "recipient_kind": "user"}, "recipient_id"),
            ("post", "/webhooks", {"url": secret_like}, "url"),
            ("patch", "/alerts/00000000-0000-0000-0000-000000000000", {"read": "perhaps"}, "read"),
            ("put", "/recipients/user/u1/preferences", {"email_levels": ["loud"]}, "email_levels.0"),
            ("put", "/recipients/user/u1/preferences", {"email_levels": [], "email": "nope"}, "email"),
        ]
        for method, path, payload, field in bad_bodies:
            response = await h.http.request(method, path, json=payload)
            assert response.status_code == 422, (path, payload, response.text)
            assert field in [e["field"] for e in response.json()["errors"]], response.text
            assert secret_like not in response.text
        assert (await h.http.get("/alerts/not-an-id")).status_code == 422
        assert (await h.http.get("/webhooks/wh_nope/deliveries")).status_code == 422
        assert (await h.http.get("/webhooks")).json() == []
        assert await h.db["recipient_preferences"].count_documents({}) == 0

        reply = await h.request("mailwarden.rpc.alert-svc.alerts.list", b'{"level": "fatal"}', timeout=5)
        body = json.loads(reply.data)
        assert body["ok"] is False and body["status"] == 422 and body["errors"][0]["field"] == "level"
        reply = await h.request("mailwarden.rpc.alert-svc.alerts.delete_all", b"{}", timeout=5)
        assert json.loads(reply.data)["status"] == 422

        good = await h.http.put(
            "/recipients/user/u1/preferences", json={"email_levels": ["error", "warning"]}
        )
        assert good.status_code == 200 and good.json() == {
            "email_levels": ["error", "warning"],
            "email": None,
        }
        stored = await h.db["recipient_preferences"].find_one({"_id": "user:u1"})
        assert stored is not None and stored["updated_by"] == "token:admin"
