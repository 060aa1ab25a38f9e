from __future__ import annotations

import httpx
from profile_svc_helpers import Recorder, profile_body


async def test_create_and_read(client: httpx.AsyncClient, events: Recorder) -> None:
    r = await client.post("/profiles", json=profile_body())
    assert r.status_code == 201, r.text
    print(r.json())
    created = await events.wait_for("ProfileCreated", 1)
    print(created)
    r2 = await client.get("/settings")
    print(r2.json())
