"""The same operations over NATS request-reply: mailwarden.rpc.profile-svc.<op>."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from nats.aio.client import Client
from profile_svc_helpers import CANARY, profile_body

from mailwarden_runtime.auth import bearer_header


async def _call(nc: Client, token: str, op: str, body: dict[str, Any]) -> dict[str, Any]:
    subject = f"mailwarden.rpc.profile-svc.{op}"
    msg = await nc.request(subject, json.dumps(body).encode(), timeout=10, headers=bearer_header(token))
    reply: dict[str, Any] = json.loads(msg.data)
    return reply


@pytest.mark.integration
async def test_create_get_list_and_field_errors_over_nats(
    client: httpx.AsyncClient, nc: Client, token: str
) -> None:
    created = await _call(
        nc,
        token,
        "create",
        profile_body("Over NATS", incoming_protocol="pop3", incoming={"host": "pop.example.com"}),
    )
    assert created["ok"] is True, created
    pid = created["result"]["profile_id"]
    assert created["result"]["incoming"]["port"] == 995

    got = await _call(nc, token, "get", {"profile_id": pid})
    assert got["ok"] is True and got["result"]["name"] == "Over NATS"
    listed = await _call(nc, token, "list", {"incoming_protocol": "pop3"})
    assert listed["ok"] is True and [p["profile_id"] for p in listed["result"]["items"]] == [pid]

    bad = profile_body(
        "Bad",
        incoming={"host": "pop.example.com", "port": 99999},
        credentials={"incoming": {"username": "u", "password": CANARY}},
    )
    refused = await _call(nc, token, "create", bad)
    assert refused["ok"] is False and refused["status"] == 422
    assert {"incoming.port"} <= {e["field"] for e in refused["errors"]}
    assert CANARY not in json.dumps(refused)
    policy = await _call(
        nc, token, "create", profile_body("Policy", incoming={"host": "imap.example.com", "port": 1143})
    )
    assert policy["status"] == 422 and "993" in policy["errors"][0]["message"]

    missing = await _call(nc, token, "get", {"profile_id": "prf_nope"})
    assert missing["ok"] is False and missing["status"] == 404
    updated = await _call(nc, token, "update", {"profile_id": pid, "description": "via bus"})
    assert updated["ok"] is True and updated["result"]["version"] == 2
    bad_update = await _call(
        nc, token, "update", {"profile_id": pid, "advanced": {"min_polling_interval_min": 2000}}
    )
    assert (
        bad_update["status"] == 422
        and bad_update["errors"][0]["field"] == "advanced.min_polling_interval_min"
    )
    settings = await _call(nc, token, "settings_get", {})
    assert settings["ok"] is True and settings["result"]["port_preset"] == "default"
    # HTTP sees what the bus did
    assert (await client.get(f"/profiles/{pid}")).json()["description"] == "via bus"
    assert (await _call(nc, token, "delete", {"profile_id": pid}))["result"] == {
        "profile_id": pid,
        "deleted": True,
    }
