"""Mailboxes per profile kept per event batch (profile-svc's usage, alert-svc's majority count),
against the real MongoDB-wire server: each event stored once, the newest version wins when read."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from mailwarden_runtime.mailboxuses import MAILBOX_USES, MailboxUse, MailboxUses

pytestmark = pytest.mark.integration


def use(mailbox_id: str, version: int, profile_id: str | None, active: bool = True) -> MailboxUse:
    return MailboxUse(mailbox_id=mailbox_id, version=version, profile_id=profile_id, active=active)


@pytest.fixture
async def uses(fresh_db: AsyncDatabase[dict[str, Any]]) -> MailboxUses:
    store = MailboxUses(fresh_db[MAILBOX_USES])
    await store.ensure_indexes()
    return store


async def test_a_batch_is_one_document_and_a_redelivered_event_is_stored_once(uses: MailboxUses) -> None:
    batch = [use("a", 1, "p1"), use("b", 1, "p1"), use("a", 1, "p1")]  # a copy inside the batch
    assert await uses.record(batch) == 2
    assert await uses.coll.count_documents({}) == 1
    # The same events again, one of them beside a new one: only the new one is stored.
    assert await uses.record([use("b", 1, "p1"), use("c", 1, "p1")]) == 1
    assert await uses.record(batch) == 0
    stored = [u["key"] async for d in uses.coll.find() for u in d["uses"]]
    assert sorted(stored) == ["a@1", "b@1", "c@1"]
    assert sorted(u.mailbox_id for u in await uses.on_profile("p1")) == ["a", "b", "c"]


async def test_the_newest_version_decides_a_move_a_deactivation_and_a_late_older_event(
    uses: MailboxUses,
) -> None:
    await uses.record([use("a", 1, "p1"), use("b", 1, "p1"), use("c", 1, "p1")])
    await uses.record([use("a", 3, "p2")])  # moved to p2
    await uses.record([use("a", 2, "p1"), use("b", 2, "p1", active=False)])  # late older one; b off
    assert sorted(u.mailbox_id for u in await uses.on_profile("p1")) == ["b", "c"]
    assert [u.mailbox_id for u in await uses.on_profile("p1", active_only=True)] == ["c"]
    assert [u.mailbox_id for u in await uses.on_profile("p2")] == ["a"]
    assert await uses.on_profile("p3") == []
    newest = await uses.newest(["a", "b", "z"])
    assert newest == {"a": use("a", 3, "p2"), "b": use("b", 2, "p1", active=False)}


async def test_a_mailbox_seen_first_in_a_status_counts_until_its_snapshot_arrives(uses: MailboxUses) -> None:
    assert await uses.note("a", "p1") is True
    assert await uses.note("a", "p1") is False  # known: nothing written
    assert await uses.coll.count_documents({}) == 1
    assert [u.mailbox_id for u in await uses.on_profile("p1", active_only=True)] == ["a"]
    await uses.record([use("a", 1, "p2")])
    assert await uses.on_profile("p1") == []
    assert [u.mailbox_id for u in await uses.on_profile("p2")] == ["a"]
    assert await uses.note("a", "p1") is False


async def test_concurrent_copies_of_one_batch_store_each_event_once(uses: MailboxUses) -> None:
    batch = [use(f"m{n}", 1, "p1") for n in range(50)]
    counts = await asyncio.gather(*(uses.record(batch[n:] + batch[:n]) for n in (0, 10, 20, 30)))
    assert sum(counts) == 50
    keys = [u["key"] async for d in uses.coll.find() for u in d["uses"]]
    assert len(keys) == len(set(keys)) == 50


async def test_one_document_per_mailbox_moves_in_and_is_dropped(
    fresh_db: AsyncDatabase[dict[str, Any]], uses: MailboxUses
) -> None:
    legacy = fresh_db["legacy"]
    docs = [{"_id": f"m{n}", "version": 2, "profile_id": "p1", "active": n % 2 == 0} for n in range(2500)]
    await legacy.insert_many(docs)
    await uses.record([use("m0", 1, "p1"), use("m1", 2, "p1", active=False)])  # a restart midway
    assert await uses.move_legacy(legacy) == 2500
    assert "legacy" not in await fresh_db.list_collection_names()
    assert len(await uses.on_profile("p1")) == 2500
    assert len(await uses.on_profile("p1", active_only=True)) == 1250
    keys = [u["key"] async for d in uses.coll.find() for u in d["uses"]]
    assert len(keys) == len(set(keys)) == 2501  # m0@1 and m0@2 .. m2499@2
    assert await uses.move_legacy(legacy) == 0  # gone: nothing to do
