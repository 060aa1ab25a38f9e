"""Every route and RPC subject of every service, for every role: 401 without or with a bad token,
403 without the permission, through the door with it. Generated from the services' declarations
(``<service>.access.PERMISSIONS``) and their OpenAPI documents, so a new operation is covered (and
one without a declared permission is refused)."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import jwt
import nats
import pytest
from fastapi import FastAPI
from nats.aio.client import Client

from mailwarden_runtime.auth import OperationPermissions, Role, Scope, bearer_header
from mailwarden_runtime.auth.bootstrap import issue_token
from mailwarden_runtime.auth.permissions import ROLE_PERMISSIONS

pytestmark = pytest.mark.integration

SERVICES = {"profile": "profile-svc", "mailbox": "mailbox-svc", "alert": "alert-svc", "tester": "tester-svc"}
PARAMS = {
    "profile_id": "prf_nope",
    "mailbox_id": "mbx_nope",
    "job_id": "job_nope",
    "alert_id": str(uuid.uuid4()),
    "webhook_id": "wh_nope",
    "recipient_kind": "user",
    "recipient_id": "someone",
    "token_id": "0" * 16,
}
PUBLIC = {"/healthz", "/readyz"}


class Matrix:
    def __init__(self, apps: dict[str, FastAPI], nc: Client, tokens: dict[Role, str]) -> None:
        self.apps = apps
        self.nc = nc
        self.tokens = tokens

    def permissions(self, name: str) -> OperationPermissions:
        permissions: OperationPermissions = self.apps[name].state.runtime.permissions
        return permissions

    def routes(self, name: str) -> list[tuple[str, str]]:
        spec = self.apps[name].openapi()["paths"]
        return [(m.upper(), p) for p, ops in spec.items() for m in ops if p not in PUBLIC]

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
    try:
        async with mailwarden_services() as apps:
            yield Matrix(apps, nc, tokens)
    finally:
        await nc.close()


def expected(role: Role, permission: str | None, owner_aware: bool) -> str:
    scope = ROLE_PERMISSIONS[role].get(permission) if permission else None  # type: ignore[call-overload]
    if scope is Scope.ALL:
        return "through"
    if scope is Scope.OWN and owner_aware:
        return "own"  # through the door; the operation then admits only the caller's own things
    return "403"


BAD_TOKENS = {
    "none": {},
    "not bearer": {"Authorization": "Basic YWRtaW46YWRtaW4="},
    "empty bearer": {"Authorization": "Bearer "},
    "unknown api token": bearer_header(f"mwt_{'0' * 16}_{'A' * 43}"),
    "garbage": bearer_header("garbage"),
}


async def test_every_http_route_for_every_role(matrix: Matrix) -> None:
    checked = 0
    for name in SERVICES:
        perms = matrix.permissions(name)
        for method, path in matrix.routes(name):
            for label, headers in BAD_TOKENS.items():
                assert await matrix.http(name, method, path, headers) == 401, (name, method, path, label)
            permission = perms.http.get((method, path))
            if path != "/metrics":
                assert permission is not None, f"{name} {method} {path} declares no permission"
            for role, token in matrix.tokens.items():
                status = await matrix.http(name, method, path, bearer_header(token))
                want = expected(role, permission, f"{method} {path}" in perms.owner_aware)
                where = (name, method, path, role.value, status)
                if want == "403":
                    assert status == 403, where
                elif want == "through":
                    assert status not in (401, 403), where
                    assert status < 500, where
                else:
                    assert status != 401 and status < 500, where
                checked += 1
    assert checked >= 40 * len(Role)
    print(f"\nHTTP matrix: {checked} route x role checks, {len(BAD_TOKENS)} bad tokens per route")


async def test_every_rpc_subject_for_every_role(matrix: Matrix) -> None:
    checked = 0
    for name in SERVICES:
        perms = matrix.permissions(name)
        for op, permission in perms.rpc.items():
            for label, headers in BAD_TOKENS.items():
                assert await matrix.rpc(name, op, headers) == 401, (name, op, label)
            for role, token in matrix.tokens.items():
                status = await matrix.rpc(name, op, bearer_header(token))
                want = expected(role, permission, op in perms.owner_aware)
                where = (name, op, role.value, status)
                if want == "403":
                    assert status == 403, where
                else:
                    assert status not in (401, 500) and (want == "own" or status != 403), where
                checked += 1
    assert checked >= 35 * len(Role)
    print(f"\nRPC matrix: {checked} subject x role checks")


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
