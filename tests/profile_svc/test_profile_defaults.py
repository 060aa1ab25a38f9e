"""At most one default profile, one truth (settings.default_profile_id), atomic under concurrency."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from profile_svc_helpers import Recorder, outbox_drained, profile_body


async def _create(client: httpx.AsyncClient, name: str, **extra: Any) -> str:
    r = await client.post("/profiles", json=profile_body(name, **extra))
    assert r.status_code == 201, r.text
    return str(r.json()["profile_id"])


@pytest.mark.integration
async def test_concurrent_set_default_leaves_exactly_one(
    client: httpx.AsyncClient, db: Any, events: Recorder
) -> None:
    ids = [await _create(client, f"profile {n}") for n in range(10)]
    replies = await asyncio.gather(
        *(client.patch(f"/profiles/{pid}", json={"is_default": True}) for pid in ids)
    )
    assert [r.status_code for r in replies] == [200] * 10, [r.text for r in replies]

    settings = (await client.get("/settings")).json()
    winner = settings["default_profile_id"]
    assert winner in ids
    listed = (await client.get("/profiles", params={"limit": 50})).json()["items"]
    assert [p["profile_id"] for p in listed if p["is_default"]] == [winner]
    only = (await client.get("/profiles", params={"is_default": "true"})).json()
    assert [p["profile_id"] for p in only["items"]] == [winner]
    others = (await client.get("/profiles", params={"is_default": "false", "limit": 50})).json()
    assert sorted(p["profile_id"] for p in others["items"]) == sorted(set(ids) - {winner})

    # The stored projection and the last event of every profile agree with the one truth.
    await outbox_drained(db)
    flagged = await db["profiles"].find({"is_default": True}).to_list(None)
    assert [d["_id"] for d in flagged] == [winner]
    latest: dict[str, dict[str, Any]] = {}
    for body in events.of("ProfileCreated") + events.of("ProfileUpdated"):
        snap = body["data"]["profile"]
        if snap["version"] >= latest.get(snap["profile_id"], {"version": 0})["version"]:
            latest[snap["profile_id"]] = snap
    assert {pid for pid, snap in latest.items() if snap["is_default"]} == {winner}
    changed = events.of("EmailSettingsChanged")
    assert changed[-1]["data"]["settings"]["default_profile_id"] == winner
    versions = [c["data"]["settings"]["version"] for c in changed]
    assert len(versions) == len(set(versions))  # one event per committed settings write


@pytest.mark.integration
async def test_default_moves_between_profiles_and_settings(client: httpx.AsyncClient) -> None:
    a = await _create(client, "A", is_default=True)
    assert (await client.get(f"/profiles/{a}")).json()["is_default"] is True
    b = await _create(client, "B", is_default=True)
    assert (await client.get(f"/profiles/{a}")).json()["is_default"] is False
    assert (await client.get("/settings")).json()["default_profile_id"] == b

    # The settings are the same truth: choosing A there makes A the default profile.
    r = await client.put("/settings", json={"default_profile_id": a})
    assert r.status_code == 200, r.text
    assert (await client.get(f"/profiles/{a}")).json()["is_default"] is True
    assert (await client.get(f"/profiles/{b}")).json()["is_default"] is False

    # Unsetting the flag on the default clears the settings' default; unsetting it elsewhere does nothing.
    assert (await client.patch(f"/profiles/{b}", json={"is_default": False})).status_code == 200
    assert (await client.get("/settings")).json()["default_profile_id"] == a
    assert (await client.patch(f"/profiles/{a}", json={"is_default": False})).status_code == 200
    assert (await client.get("/settings")).json()["default_profile_id"] is None

    r = await client.put("/settings", json={"default_profile_id": "prf_nope"})
    assert r.status_code == 422
    assert [e["field"] for e in r.json()["errors"]] == ["default_profile_id"]
