"""The read models keep the newest only, one event at a time or a bulk set-up's batch at once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from contracts.events import MailboxSnapshot
from contracts.models import Owner
from mailwarden_runtime.readmodels import NewestRow, ReadModels, newest_many

OWNER = Owner(kind="user", id="ann", name="Ann", email="ann@example.org")


@pytest.fixture
async def dbs(mongo_uri: str) -> AsyncIterator[tuple[AsyncDatabase[dict[str, Any]], ...]]:
    """Two fresh databases."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    names = [f"t_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    try:
        yield tuple(client[name] for name in names)
    finally:
        for name in names:
            await client.drop_database(name)
        await client.close()


def snapshot(mailbox_id: str, version: int, profile_id: str) -> MailboxSnapshot:
    return MailboxSnapshot(
        mailbox_id=mailbox_id,
        email=f"{mailbox_id}@example.org",
        owner=OWNER,
        profile_id=profile_id,
        version=version,
        updated_at=datetime.now(UTC),
    )


@pytest.mark.integration
async def test_a_batch_keeps_the_newest_of_each_document_whatever_the_order(
    dbs: tuple[AsyncDatabase[dict[str, Any]], ...],
) -> None:
    coll = dbs[0]["things"]
    await coll.insert_many(
        [
            {"_id": "stored-newer", "version": 5, "v": "five"},
            {"_id": "stored-older", "version": 1, "v": "one"},
            {"_id": "no-version", "v": "status first"},  # e.g. a status that came before the snapshot
            {"_id": "tombstone", "deleted": True, "version": 1},
        ]
    )
    rows = [
        NewestRow("stored-newer", 3, {"v": "three"}),  # older than stored: unchanged
        NewestRow("stored-older", 2, {"v": "two"}),
        NewestRow("no-version", 1, {"v": "one"}),
        NewestRow("tombstone", 9, {"v": "back?"}),  # a deleted one never comes back
        NewestRow("new", 2, {"v": "two"}),
        NewestRow("new", 1, {"v": "one"}),  # the same document twice, the older one last
        NewestRow("new-2", 1, {"v": "one"}),
        NewestRow("new-2", 2, {"v": "two"}),  # and the newer one last
    ]
    changed = await newest_many(coll, "version", rows)
    stored = {d["_id"]: d async for d in coll.find()}
    assert stored["stored-newer"] == {"_id": "stored-newer", "version": 5, "v": "five"}
    assert stored["stored-older"]["v"] == "two"
    assert stored["no-version"] == {"_id": "no-version", "version": 1, "v": "one"}
    assert stored["tombstone"] == {"_id": "tombstone", "deleted": True, "version": 1}
    assert (stored["new"]["version"], stored["new"]["v"]) == (2, "two")
    assert (stored["new-2"]["version"], stored["new-2"]["v"]) == (2, "two")
    assert changed == 5  # stored-older, no-version, new (insert), new-2 (insert, then update)
    assert await newest_many(coll, "version", rows) == 0, "a redelivered batch changes nothing"


@pytest.mark.integration
async def test_put_mailboxes_stores_what_put_mailbox_stores_one_by_one(
    dbs: tuple[AsyncDatabase[dict[str, Any]], ...],
) -> None:
    one, many = ReadModels(dbs[0]), ReadModels(dbs[1])
    events = [snapshot("a", 1, "p1"), snapshot("b", 2, "p1"), snapshot("a", 2, "p2"), snapshot("b", 1, "p3")]
    for event in events:
        await one.put_mailbox(event)
    assert await many.put_mailboxes(events)
    singly = {e.id: e.snapshot for e in await one.all_mailboxes()}
    batched = {e.id: e.snapshot for e in await many.all_mailboxes()}
    assert singly == batched
    assert {k: (v.version, v.profile_id) for k, v in batched.items() if v} == {"a": (2, "p2"), "b": (2, "p1")}
    assert not await many.put_mailboxes(events), "nothing newer: nothing changed"
