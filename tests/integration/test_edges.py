"""The same answers from every service: 404 bodies, malformed JSON, a too-long password."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import httpx
import nats
import pytest
from fastapi import FastAPI

from mailwarden_runtime.auth import bearer_header
from mailwarden_runtime.auth.bootstrap import issue_on

pytestmark = pytest.mark.integration

NOT_FOUND = {
    "profile": ("/profiles/nosuch", {"detail": "no such profile", "errors": [{"field": "profile_id", "message": "no such profile"}]}),
    "mailbox": ("/mailboxes/nosuch", {"detail": "no such mailbox", "errors": [{"field": "mailbox_id", "message": "no such mailbox"}]}),
    "alert": ("/alerts/00000000-0000-0000-0000-000000000000", {"detail": "no such alert", "errors": [{"field": "alert_id", "message": "no such alert"}]}),
}  # fmt: skip


@pytest.fixture(scope="module")
async def clients(
    mailwarden_services: Callable[[], AbstractAsyncContextManager[dict[str, FastAPI]]],
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    async with mailwarden_services() as apps:
        made = {
            n: httpx.AsyncClient(
                transport=httpx.ASGITransport(app=a),
                base_url="http://s",
                headers=bearer_header(a.state.token),
            )
            for n, a in apps.items()
        }
        yield made
        for client in made.values():
            await client.aclose()


@pytest.mark.parametrize("service", ["profile", "mailbox", "alert", "tester"])
async def test_404_bodies_are_alike_on_every_service(
    clients: dict[str, httpx.AsyncClient], service: str
) -> None:
    client = clients[service]
    r = await client.get("/no/such/route")  # FastAPI's own 404, in our Problem body
    assert (r.status_code, r.json()) == (404, {"detail": "no such route", "errors": []})
    if service in NOT_FOUND:
        path, body = NOT_FOUND[service]
        r = await client.get(path)
        assert (r.status_code, r.json()) == (404, body)


async def test_malformed_json_is_named_by_line_and_column(
    clients: dict[str, httpx.AsyncClient], nats_url: str
) -> None:
    body = b'{\n  "email": "a@b.test",\n  "owner": ,\n}'
    r = await clients["mailbox"].post(
        "/mailboxes", content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["errors"] == [{"field": "body", "message": "malformed JSON at line 3 column 12"}]
    nc = await nats.connect(nats_url)
    try:
        auth = bearer_header(await issue_on(nc))
        msg = await nc.request("mailwarden.rpc.profile-svc.create", body, timeout=10, headers=auth)
    finally:
        await nc.close()
    reply = json.loads(msg.data)
    assert reply["status"] == 422 and reply["errors"][0]["message"] == "malformed JSON at line 3 column 12"


async def test_a_too_long_password_is_counted_in_characters(clients: dict[str, httpx.AsyncClient]) -> None:
    owner = {"kind": "user", "id": "u1", "name": "U"}
    r = await clients["mailbox"].post(
        "/mailboxes",
        json={"email": "a@b.test", "owner": owner, "credentials": {"username": "a", "password": "p" * 1500}},
    )
    assert r.status_code == 422
    assert r.json()["errors"] == [
        {"field": "credentials.password", "message": "must be at most 1024 characters, not 1500"}
    ]
    assert "p" * 20 not in r.text
