"""One declaration, two doors: the same operation over HTTP and NATS request-reply, on a real NATS."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats
import pytest
from fastapi import FastAPI
from nats.aio.client import Client
from pydantic import BaseModel, ConfigDict, Field

from mailwarden_runtime import operations
from mailwarden_runtime.auth import bearer_header
from mailwarden_runtime.auth.bootstrap import issue_token
from mailwarden_runtime.http import DomainError
from mailwarden_runtime.operations import Call, Operation, serve
from mailwarden_runtime.service import ServiceRuntime
from mailwarden_runtime.settings import ServiceSettings

pytestmark = pytest.mark.integration
SERVICE = "ops-test"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Ref(Strict):
    item_id: str = Field(pattern=r"^[a-z]{1,8}$")


class Changes(Strict):
    label: str | None = None
    size: int | None = Field(None, ge=0)


class Change(Ref, Changes):
    """The NATS form: the id beside the changed fields; HTTP puts the id in the path."""


class Search(Strict):
    limit: int = Field(10, ge=1, le=50)


class Found(Strict):
    item_id: str
    sent: list[str]
    limit: int = 0


class Items(BaseModel):
    items: list[Found]


class Nothing(Strict):
    pass


CHANGE = Operation(
    name="items.change",
    method="PATCH",
    path="/items/{item_id}",
    input=Change,
    output=Found,
    permission="profiles:write",
    summary="Change an item",
    errors={404: "No such item"},
)
FIND = Operation(
    name="items.find",
    method="GET",
    path="/items/{item_id}/found",
    input=type("FindRequest", (Ref, Search), {}),
    output=Found,
    permission="profiles:read",
    summary="Find",
)
REMOVE = Operation(
    name="items.remove",
    method="DELETE",
    path="/items/{item_id}",
    input=Ref,
    output=Found,
    permission="profiles:write",
    summary="Remove",
    status_code=204,
)
ALL = Operation(
    name="items.all",
    method="GET",
    path="/items",
    input=Nothing,
    output=Items,
    permission="profiles:read",
    summary="All",
    http_items=True,
)


@dataclass
class Door:
    http: httpx.AsyncClient
    nc: Client
    app: FastAPI
    calls: list[Call] = field(default_factory=list)
    handled: list[BaseModel] = field(default_factory=list)
    deny: bool = False

    async def rpc(
        self, op: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        subject = f"mailwarden.rpc.{SERVICE}.{op}"
        msg = await self.nc.request(subject, json.dumps(body).encode(), timeout=5, headers=headers)
        reply: dict[str, Any] = json.loads(msg.data)
        return reply


@pytest.fixture
async def door(nats_url: str) -> AsyncIterator[Door]:
    runtime = ServiceRuntime(
        SERVICE, ServiceSettings(nats_url=nats_url, log_setup=False), uses_database=False
    )
    state: dict[str, Door] = {}

    async def check(call: Call, request: BaseModel | None) -> None:
        state["door"].calls.append(call)
        if state["door"].deny:
            raise DomainError(403, f"needs {call.operation.permission}")

    async def change(req: Change) -> Found:
        state["door"].handled.append(req)
        if req.item_id == "gone":
            raise DomainError(404, "no such item", "item_id")
        return Found(item_id=req.item_id, sent=sorted(req.model_fields_set))

    async def find(req: Any) -> Found:
        return Found(item_id=req.item_id, sent=sorted(req.model_fields_set), limit=req.limit)

    async def remove(req: Ref) -> Found:
        return Found(item_id=req.item_id, sent=[])

    async def every(_: Nothing) -> Items:
        return Items(items=[Found(item_id="a", sent=[])])

    bound = [CHANGE.bind(change), FIND.bind(find), REMOVE.bind(remove), ALL.bind(every)]
    app = runtime.http_app(title=SERVICE, routers=[serve(runtime, bound, check)])
    async with app.router.lifespan_context(app):
        nc = await nats.connect(nats_url)
        transport = httpx.ASGITransport(app=app)
        token = await issue_token(nats_url)  # the app's middleware lets only verified callers in
        headers = bearer_header(token)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc", headers=headers) as http:
            state["door"] = Door(http, nc, app)
            yield state["door"]
        await nc.drain()


async def test_the_path_parameter_and_the_body_make_one_input_on_both_doors(door: Door) -> None:
    over_http = await door.http.patch("/items/abc", json={"label": "x"})
    assert over_http.status_code == 200, over_http.text
    assert over_http.json() == {"item_id": "abc", "sent": ["item_id", "label"], "limit": 0}
    over_nats = await door.rpc("items.change", {"item_id": "abc", "label": "x"})
    assert over_nats == {"ok": True, "result": over_http.json()}
    assert [(c.door, c.operation.name) for c in door.calls] == [
        ("http", "items.change"),
        ("nats", "items.change"),
    ]


async def test_refusals_are_the_same_problem_on_both_doors(door: Door) -> None:
    bad_path = await door.http.patch("/items/ABC", json={})
    assert bad_path.status_code == 422 and bad_path.json()["errors"][0]["field"] == "path.item_id"
    bad_body = await door.http.patch("/items/abc", json={"size": -1})
    assert bad_body.status_code == 422 and bad_body.json()["errors"][0]["field"] == "size"
    assert (await door.rpc("items.change", {"item_id": "abc", "size": -1}))["errors"][0]["field"] == "size"
    missing = await door.http.patch("/items/gone", json={})
    assert missing.status_code == 404 and missing.json()["errors"] == [
        {"field": "item_id", "message": "no such item"}
    ]
    assert (await door.rpc("items.change", {"item_id": "gone"}))["status"] == 404


async def test_a_path_that_is_no_route_is_a_404_not_a_redirect(door: Door) -> None:
    """``/items/%2F`` is ``/items/`` once decoded, which no route matches. Starlette's default
    answered it 307 to ``/items`` (another resource, the method and the body kept: chaos F1 found
    ``PATCH /mailboxes/%2F`` redirected to ``/mailboxes``); each route has one path."""
    for method, path in [
        ("PATCH", "/items/%2F"),
        ("PATCH", "/items/"),
        ("GET", "/items/"),
        ("GET", "/items/abc/found/"),
        ("DELETE", "/items/abc/"),
    ]:
        answer = await door.http.request(method, path, json={} if method == "PATCH" else None)
        assert answer.status_code == 404, (method, path, answer.status_code, answer.headers.get("location"))
        assert answer.json()["detail"] == "no such route"
    assert door.handled == [] and door.calls == []
    assert (await door.http.get("/items")).status_code == 200  # the route itself still answers


async def test_authorize_runs_before_the_handler_on_both_doors(door: Door) -> None:
    door.deny = True
    refused = await door.http.patch("/items/abc", json={"label": "x"})
    assert refused.status_code == 403 and refused.json()["detail"] == "needs profiles:write"
    token = {"Authorization": "Bearer t0ken"}
    assert (await door.rpc("items.change", {"item_id": "abc"}, headers=token))["status"] == 403
    assert door.handled == []
    assert door.calls[0].headers.get("host") == "svc"
    assert door.calls[0].headers.get("authorization", "").startswith("Bearer mwt_")
    assert door.calls[1].headers.get("Authorization") == "Bearer t0ken"


async def test_get_reads_the_query_delete_answers_204_and_lists_stay_bare_over_http(door: Door) -> None:
    found = await door.http.get("/items/abc/found", params={"limit": 3})
    assert found.json() == {"item_id": "abc", "sent": ["item_id", "limit"], "limit": 3}
    assert (await door.http.get("/items/abc/found", params={"limit": 99})).json()["errors"][0][
        "field"
    ] == "query.limit"
    removed = await door.http.delete("/items/abc")
    assert removed.status_code == 204 and removed.content == b""
    assert (await door.rpc("items.remove", {"item_id": "abc"}))["result"]["item_id"] == "abc"
    assert (await door.http.get("/items")).json() == [{"item_id": "a", "sent": [], "limit": 0}]
    assert (await door.rpc("items.all", {}))["result"] == {
        "items": [{"item_id": "a", "sent": [], "limit": 0}]
    }


def test_the_openapi_entry_has_every_status_the_permission_and_the_subject(door: Door) -> None:
    entry = door.app.openapi()["paths"]["/items/{item_id}"]["patch"]
    assert set(entry["responses"]) == {"200", "401", "403", "404", "422", "503"}
    assert entry["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/Changes")
    assert entry["x-permission"] == "profiles:write"
    assert entry["x-rpc-subject"] == f"mailwarden.rpc.{SERVICE}.items.change"
    assert CHANGE.statuses() == {
        200: "Change an item",
        **operations.ACCESS_REFUSALS,  # 401, 403 and 503, what authorize answers
        404: "No such item",
        422: "Invalid input: each bad field named, nothing stored",
    }


def test_the_refusals_of_authorize_join_every_operation_s_statuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(operations.ACCESS_REFUSALS, 403, "Not allowed")
    assert CHANGE.statuses()[403] == "Not allowed" and ALL.statuses()[403] == "Not allowed"
    assert list(CHANGE.statuses()) == [200, 401, 403, 404, 422, 503]
