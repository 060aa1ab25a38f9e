"""create_many asked to approve: the approve check is per mailbox, through both doors.

An API token of an email administrator scoped to ``mailboxes:read`` and ``mailboxes:write`` (no
``mailboxes:approve``) may create mailboxes, but a batch asking to store them approved is refused
as a whole: 403 naming the first mailbox at fault, nothing written, nothing published.
"""

from __future__ import annotations

import json

import httpx
from mailbox_helpers import MakeHarness, mailbox_body

from mailwarden_runtime.auth import Role, bearer_header
from mailwarden_runtime.auth.bootstrap import issue_token
from mailwarden_servers import NatsServer


async def test_a_token_without_approve_cannot_create_approved_mailboxes(
    make_harness: MakeHarness, private_nats: NatsServer
) -> None:
    token = await issue_token(
        private_nats.url, "crm-import", [Role.EMAIL_ADMIN], scopes=["mailboxes:read", "mailboxes:write"]
    )
    async with make_harness() as h:
        bodies = [mailbox_body(i, mailbox_id=f"s{i}", profile_id=None) for i in range(1, 4)]
        transport = httpx.ASGITransport(app=h.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://svc", headers=bearer_header(token)
        ) as scoped:
            r = await scoped.post("/mailboxes/batch", json={"mailboxes": bodies, "approve": True})
            assert r.status_code == 403, r.text
            assert r.json()["errors"] == [
                {"field": "mailboxes.0", "message": "needs mailboxes:approve on this mailbox"}
            ]
            msg = await h.nc.request(
                "mailwarden.rpc.mailbox-svc.create_many",
                json.dumps({"mailboxes": bodies, "approve": True}).encode(),
                timeout=10,
                headers=bearer_header(token),
            )
            assert json.loads(msg.data) == {
                "ok": False,
                "status": 403,
                "detail": "needs mailboxes:approve on this mailbox",
                "errors": [{"field": "mailboxes.0", "message": "needs mailboxes:approve on this mailbox"}],
            }
            assert await h.db["mailboxes"].count_documents({}) == 0
            assert await h.stream_messages("mailwarden.mailbox.") == []

            # the same token creates them pending: only the approval was missing
            r = await scoped.post("/mailboxes/batch", json={"mailboxes": bodies})
            assert r.status_code == 201 and r.json()["done"] == ["s1", "s2", "s3"], r.text
        for mailbox_id in ("s1", "s2", "s3"):
            assert (await h.mailbox(mailbox_id))["approval"] == "pending"
        assert await h.stream_messages("mailwarden.mailbox.approved") == []
