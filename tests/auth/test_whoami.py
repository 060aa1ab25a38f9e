"""Who am I (mailbox-svc ``whoami``): any verified caller learns their roles, each permission's
scope and the mailboxes "own" covers for them, on both doors; nobody else's mailboxes."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx
import nats
import pytest
from fastapi import FastAPI

from mailwarden_runtime.auth import Role, bearer_header
from mailwarden_runtime.auth.bootstrap import issue_token

pytestmark = pytest.mark.integration


async def test_whoami_names_roles_scopes_and_own_mailboxes_on_both_doors(
    nats_url: str, mailwarden_services: Callable[[], AbstractAsyncContextManager[dict[str, FastAPI]]]
) -> None:
    tag = uuid.uuid4().hex[:6]
    ann = f"ann{tag}"
    async with mailwarden_services() as apps:
        transport = httpx.ASGITransport(app=apps["mailbox"])
        admin = bearer_header(apps["mailbox"].state.token)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as http:
            batch = [
                {"mailbox_id": f"{name}{tag}", "email": f"{name}{tag}@mail.test", "owner": owner}
                for name, owner in (
                    ("owned", {"kind": "user", "id": ann, "name": "Ann"}),
                    ("granted", {"kind": "queue", "id": f"desk{tag}", "name": "Desk"}),
                    ("other", {"kind": "user", "id": f"bob{tag}", "name": "Bob"}),
                )
            ]
            resp = await http.post("/mailboxes/batch", json={"mailboxes": batch}, headers=admin)
            assert resp.status_code == 201, resp.text
            owner = await issue_token(nats_url, ann, [Role.MAILBOX_OWNER], mailboxes=[f"granted{tag}"])
            approver = await issue_token(nats_url, f"appr{tag}", [Role.APPROVER])

            me = (await http.get("/whoami", headers=bearer_header(owner))).json()
            assert me["subject"] == ann and me["via"] == "token" and me["roles"] == ["mailbox_owner"]
            assert me["permissions"] == {
                "mailboxes:read": "own",
                "mailboxes:test": "own",
                "mailboxes:credentials": "own",
                "alerts:read": "own",
                "alerts:write": "own",
            }
            assert [m["mailbox_id"] for m in me["own_mailboxes"]] == [f"granted{tag}", f"owned{tag}"]
            assert me["own_wall"] == f"user:{ann}"

            them = (await http.get("/whoami", headers=bearer_header(approver))).json()
            assert them["permissions"] == {"mailboxes:read": "all", "mailboxes:approve": "all"}
            assert them["own_mailboxes"] == [] and them["own_wall"] is None

            assert (await http.get("/whoami")).status_code == 401
            assert (await http.get("/whoami", headers=bearer_header("mwt_x_y"))).status_code == 401

        nc = await nats.connect(nats_url)
        try:
            msg = await nc.request(
                "mailwarden.rpc.mailbox-svc.whoami", b"{}", timeout=10, headers=bearer_header(owner)
            )
            reply = json.loads(msg.data)
            assert reply["ok"] and reply["result"] == me
            msg = await nc.request("mailwarden.rpc.mailbox-svc.whoami", b"{}", timeout=10)
            assert json.loads(msg.data)["status"] == 401
        finally:
            await nc.close()
