"""alert-svc's mailbox read model: a batch of mailbox events stores what they store one by one."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from alert_svc.store.readmodels import ReadModelStore


@pytest.mark.integration
async def test_save_mailboxes_keeps_what_save_mailbox_keeps(mongo_uri: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    names = [f"t_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    one, many = (ReadModelStore(client[n]) for n in names)
    try:
        # A status seen first (version 0), a move to another profile and a late older event.
        for store in (one, many):
            await store.note_mailbox("a", "p1")
        events = [("a", 1, "p1", True), ("b", 2, "p2", True), ("b", 1, "p1", True), ("c", 1, "p1", False)]
        for m, v, p, a in events:
            await one.save_mailbox(m, v, p, a)
        await many.save_mailboxes(events)
        for store in (one, many):
            assert sorted(await store.profile_mailbox_ids("p1")) == ["a", "c"]
            assert await store.profile_mailbox_ids("p2") == ["b"]
        docs = [{d["_id"]: d async for d in s.mailboxes.find()} for s in (one, many)]
        assert docs[0] == docs[1]
    finally:
        for n in names:
            await client.drop_database(n)
        await client.close()
