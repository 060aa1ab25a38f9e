"""Every operation of every service on both doors, for every role: 401 without or with a bad token,
403 without the permission, through the door with it, and never a status the operation does not
declare (its OpenAPI entry lists every status it answers). Generated from the services' declarations
(``<package>.api.OPERATIONS``), so a new operation is covered; the routes that are not operations
(the probes, /metrics, the API docs) are checked too."""

from __future__ import annotations

import importlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import nats
import pytest
from fastapi import FastAPI
from nats.aio.client import Client

from contracts.envelope import make_envelope
from contracts.events import MailboxCreated, MailboxSnapshot
from contracts.models import Owner, OwnerKind
from mailwarden_runtime.auth import Role, Scope, bearer_header
from mailwarden_runtime.auth.bootstrap import issue_token
from mailwarden_runtime.auth.permissions import ROLE_PERMISSIONS
from mailwarden_runtime.auth.whoami import SIGNED_IN
from mailwarden_runtime.operations import Operation
from mailwarden_servers import eventually

pytestmark = pytest.mark.integration

SERVICES = {
    "profile": "profile-svc",
    "mailbox": "mailbox-svc",
    "alert": "alert-svc",
    "tester": "tester-svc",
    "sender": "sender-svc",
    "sync": "sync-svc",
}
PACKAGES = {name: svc.replace("-", "_") for name, svc in SERVICES.items()}
PARAMS = {
    "profile_id": "prf_nope",
    "mailbox_id": "mbx_nope",
    "job_id": "job_nope",
    "alert_id": str(uuid.uuid4()),
    "webhook_id": "wh_nope",
    "recipient_kind": "user",
    "recipient_id": "someone",
    "token_id": "0" * 16,
    "idempotency_key": "key-nope",
}
PUBLIC = {"/healthz", "/readyz"}


class Matrix:
    def __init__(self, apps: dict[str, FastAPI], nc: Client, tokens: dict[Role, str]) -> None:
        self.apps = apps
        self.nc = nc
        self.tokens = tokens

    @staticmethod
    def operations(name: str) -> tuple[Operation[Any, Any], ...]:
        try:
            module = importlib.import_module(f"{PACKAGES[name]}.api")
        except ModuleNotFoundError:
            return ()  # tester-svc serves no operation
        declared: tuple[Operation[Any, Any], ...] = module.OPERATIONS
        return declared

    def undeclared_routes(self, name: str) -> list[tuple[str, str]]:
        """Routes served that are not operations (the probes, /metrics)."""
        ops = {(op.method, op.path) for op in self.operations(name)}
        spec = self.apps[name].openapi()["paths"]
        return [(m.upper(), p) for p, e in spec.items() for m in e if (m.upper(), p) not in ops]

    async def http(self, name: str, method: str, path: str, headers: dict[str, str]) -> int:
        url = re.sub(r"\{(\w+)\}", lambda m: PARAMS[m.group(1)], path)
        transport = httpx.ASGITransport(app=self.apps[name])
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            body = {} if method in ("POST", "PUT", "PATCH") else None
            resp = await client.request(method, url, json=body, headers=headers)
        return resp.status_code

    async def rpc(self, name: str, op: str, headers: dict[str, str] | None) -> int:
        msg = await self.nc.request(
            f"mailwarden.rpc.{SERVICES[name]}.{op}", b"{}", timeout=10, headers=headers
        )
        reply = json.loads(msg.data)
        return 200 if reply.get("ok") else int(reply["status"])


@pytest.fixture(scope="module")
async def matrix(
    nats_url: str, mailwarden_services: Callable[[], AbstractAsyncContextManager[dict[str, FastAPI]]]
) -> AsyncIterator[Matrix]:
    tokens = {role: await issue_token(nats_url, f"{role.value}-1", [role]) for role in Role}
    nc = await nats.connect(nats_url)
    from sender_svc.app import create_app as sender_app
    from sync_svc.app import create_app as sync_app

    try:
        async with mailwarden_services() as apps, AsyncExitStack() as stack:
            # sender-svc and sync-svc on the fixture's environment (database prefix, key rings).
            for name, factory in (("sender", sender_app), ("sync", sync_app)):
                app = factory()
                await stack.enter_async_context(app.router.lifespan_context(app))
                apps[name] = app
            yield Matrix(apps, nc, tokens)
    finally:
        await nc.close()


def expected(role: Role, permission: str, owner_scoped: bool) -> str:
    if permission == SIGNED_IN:
        return "through"  # who am I: every verified caller
    scope = ROLE_PERMISSIONS[role].get(permission)  # type: ignore[call-overload]
    if scope is Scope.ALL:
        return "through"
    if scope is Scope.OWN and owner_scoped:
        return "own"  # through the door; the operation then admits only the caller's own things
    return "403"


BAD_TOKENS = {
    "none": {},
    "not bearer": {"Authorization": "Basic YWRtaW46YWRtaW4="},
    "empty bearer": {"Authorization": "Bearer "},
    "unknown api token": bearer_header(f"mwt_{'0' * 16}_{'A' * 43}"),
    "garbage": bearer_header("garbage"),
}


async def test_every_operation_on_both_doors_for_every_role(matrix: Matrix) -> None:
    checked = 0
    for name in SERVICES:
        for op in matrix.operations(name):
            for label, headers in BAD_TOKENS.items():
                assert await matrix.http(name, op.method, op.path, headers) == 401, (name, op.name, label)
                assert await matrix.rpc(name, op.name, headers) == 401, (name, op.name, label)
            for role, token in matrix.tokens.items():
                want = expected(role, op.permission, op.owner_scoped)
                for door, status in (
                    ("http", await matrix.http(name, op.method, op.path, bearer_header(token))),
                    ("nats", await matrix.rpc(name, op.name, bearer_header(token))),
                ):
                    where = (name, op.name, door, role.value, status)
                    assert status in op.statuses(), f"{where}: answered a status its OpenAPI entry lacks"
                    if want == "403":
                        assert status == 403, where
                    elif want == "through":
                        assert status not in (401, 403) and status < 500, where
                    else:  # own: through the door; the operation admits only the caller's own
                        assert status != 401 and status < 500, where
                    checked += 1
    operations = sum(len(matrix.operations(n)) for n in SERVICES)
    assert all(matrix.operations(n) for n in ("sender", "sync"))
    assert operations >= 46 and checked == operations * len(Role) * 2
    print(
        f"\nmatrix: {operations} operations x {len(Role)} roles x 2 doors = {checked} checks, "
        f"{len(BAD_TOKENS)} bad tokens each"
    )


async def test_routes_that_are_not_operations(matrix: Matrix) -> None:
    for name in SERVICES:
        others = matrix.undeclared_routes(name)
        assert {p for _, p in others} == {"/healthz", "/readyz", "/metrics"}, (name, others)
        assert await matrix.http(name, "GET", "/openapi.json", {}) == 401
        assert (
            await matrix.http(name, "GET", "/openapi.json", bearer_header(matrix.tokens[Role.AUDITOR])) == 200
        )


def _b64(data: dict[str, Any]) -> str:
    import base64

    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def test_token_fuzzing_is_401_never_500(matrix: Matrix) -> None:
    now = int(time.time())
    claims = {
        "iss": "x",
        "aud": "mailwarden",
        "sub": "root",
        "exp": now + 60,
        "mailwarden_roles": ["system_admin"],
    }
    valid = matrix.tokens[Role.SYSTEM_ADMIN]
    forged = [
        valid[:-1] + ("A" if valid[-1] != "A" else "B"),  # one character off
        valid + "A",
        valid.replace("mwt_", "mwt-"),
        _b64({"alg": "none"}) + "." + _b64(claims) + ".",
        jwt.encode(claims, "a-secret-of-my-own-" * 3, algorithm="HS256"),
        jwt.encode(claims | {"exp": now - 10}, "k" * 32, algorithm="HS256"),
        "a.b.c",
        "." * 3,
        "x" * 10_000,
        "mwt_" + "z" * 60,
    ]
    for token in forged:
        for name, method, path in (("profile", "GET", "/profiles"), ("mailbox", "GET", "/mailboxes")):
            assert await matrix.http(name, method, path, bearer_header(token)) == 401, token[:40]
        assert await matrix.rpc("profile", "list", bearer_header(token)) == 401, token[:40]


async def test_probes_stay_open_and_metrics_need_a_token(matrix: Matrix) -> None:
    for name in SERVICES:
        assert await matrix.http(name, "GET", "/healthz", {}) == 200
        assert await matrix.http(name, "GET", "/readyz", {}) == 200
        assert await matrix.http(name, "GET", "/metrics", {}) == 401
        assert await matrix.http(name, "GET", "/metrics", bearer_header(matrix.tokens[Role.AUDITOR])) == 200


async def test_an_integration_sends_only_as_its_granted_mailboxes(matrix: Matrix, nats_url: str) -> None:
    """The integration role holds ``mail:send`` on the mailboxes granted to its token, no others."""
    crm = await issue_token(nats_url, "crm-1", [Role.INTEGRATION], mailboxes=["mbx_granted"])

    def mail(mailbox_id: str) -> dict[str, Any]:
        return {
            "mailbox_id": mailbox_id,
            "idempotency_key": "k-1",
            "to": [{"address": "someone@example.com"}],
            "subject": "hello",
            "text": "hello",
        }

    transport = httpx.ASGITransport(app=matrix.apps["sender"])
    async with httpx.AsyncClient(transport=transport, base_url="http://svc", headers=bearer_header(crm)) as c:
        other = await c.post("/sends", json=mail("mbx_other"))
        granted = await c.post("/sends", json=mail("mbx_granted"))
        lookup_other = await c.get("/sends/mbx_other/k-1")
        lookup_granted = await c.get("/sends/mbx_granted/k-1")
    assert other.status_code == 403 and lookup_other.status_code == 403
    # Through the door: the mailbox is unknown to sender-svc here, so it answers for that instead.
    assert granted.status_code not in (401, 403) and granted.status_code < 500, granted.text
    assert lookup_granted.status_code == 404
    for mailbox_id, want_403 in (("mbx_other", True), ("mbx_granted", False)):
        msg = await matrix.nc.request(
            "mailwarden.rpc.sender-svc.send",
            json.dumps(mail(mailbox_id)).encode(),
            timeout=10,
            headers=bearer_header(crm),
        )
        status = json.loads(msg.data).get("status", 200)
        assert (status == 403) is want_403, (mailbox_id, msg.data)


async def test_sync_state_for_its_owner_and_granted_integration_only(matrix: Matrix, nats_url: str) -> None:
    """A mailbox owner reads the sync state of their own mailbox; an integration of the mailboxes granted."""
    tag = uuid.uuid4().hex[:6]
    mailbox_id, owner = f"m-sync-{tag}", f"carol{tag}"
    snapshot = MailboxSnapshot(
        mailbox_id=mailbox_id,
        email=f"{owner}@mail.test",
        owner=Owner(kind=OwnerKind.USER, id=owner, name=owner),
        updated_at=datetime.now(UTC),
    )
    env = make_envelope(MailboxCreated(mailbox=snapshot), "mailbox-svc")
    await matrix.nc.jetstream().publish(
        MailboxCreated.SUBJECT, env.to_bytes(), headers={"Nats-Msg-Id": str(env.id)}
    )
    tokens = {
        "owner": await issue_token(nats_url, owner, [Role.MAILBOX_OWNER]),
        "other owner": await issue_token(nats_url, f"dave{tag}", [Role.MAILBOX_OWNER]),
        "granted integration": await issue_token(
            nats_url, f"crm{tag}", [Role.INTEGRATION], mailboxes=[mailbox_id]
        ),
        "other integration": await issue_token(
            nats_url, f"erp{tag}", [Role.INTEGRATION], mailboxes=["m-else"]
        ),
    }
    admin = matrix.tokens[Role.SYSTEM_ADMIN]
    transport = httpx.ASGITransport(app=matrix.apps["sync"])
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as c:

        async def known() -> bool:
            r = await c.get(f"/mailboxes/{mailbox_id}/sync", headers=bearer_header(admin))
            return r.status_code == 200

        await eventually(known, "sync-svc to learn the mailbox")
        got = {
            who: (await c.get(f"/mailboxes/{mailbox_id}/sync", headers=bearer_header(t))).status_code
            for who, t in tokens.items()
        }
    assert got == {"owner": 200, "other owner": 403, "granted integration": 200, "other integration": 403}
    for who, token in tokens.items():
        msg = await matrix.nc.request(
            "mailwarden.rpc.sync-svc.state",
            json.dumps({"mailbox_id": mailbox_id}).encode(),
            timeout=10,
            headers=bearer_header(token),
        )
        reply = json.loads(msg.data)
        assert (200 if reply.get("ok") else reply["status"]) == got[who], (who, reply)
