"""The org settings record who changed them last, like every stored document, and the event names them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from profile_svc_helpers import Recorder, outbox_drained

from mailwarden_runtime.auth import Role, bearer_header
from mailwarden_runtime.auth.bootstrap import issue_token
from mailwarden_servers import NatsServer, eventually


@pytest.mark.integration
async def test_settings_record_the_actor_and_the_event_carries_it(
    app: FastAPI, client: httpx.AsyncClient, db: Any, events: Recorder, private_nats: NatsServer
) -> None:
    first = (await client.get("/settings")).json()
    assert first["updated_by"] == "service:profile-svc"  # made at first start, by the service itself

    ops = await issue_token(private_nats.url, "ops-2", [Role.SYSTEM_ADMIN])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc", headers=bearer_header(ops)) as c:
        changed = await c.put("/settings", json={"alert_levels": ["error"]})
    assert changed.status_code == 200, changed.text
    assert changed.json()["updated_by"] == "token:ops-2"
    assert changed.json()["version"] == first["version"] + 1

    await outbox_drained(db)
    stored = await db["settings"].find_one({})
    assert stored["updated_by"] == "token:ops-2" and stored["version"] == first["version"] + 1

    async def published() -> dict[str, Any] | None:
        found = [
            e
            for e in events.of("EmailSettingsChanged")
            if e["data"]["settings"]["version"] == stored["version"]
        ]
        return found[-1] if found else None

    event = await eventually(published, what="the settings event")
    assert event["actor"] == "token:ops-2"

    # The same settings again, by another caller: nothing changes, so the last actor stays.
    same = await client.put("/settings", json={"alert_levels": ["error"]})
    assert same.json()["version"] == stored["version"] and same.json()["updated_by"] == "token:ops-2"
