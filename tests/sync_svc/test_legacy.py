"""An upgrade from the ledger of one document per message (``published``) loses nothing.

The older documents move into ledger batches and answers at start; a start that stopped midway
moves them again without storing anything twice; and a service started over an older database
recognises what that database says was published.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from sync_helpers import Bus, Mailbox, append, message
from test_uidvalidity import new_uidvalidity

from mailwarden_runtime.mongo import Document, database_name
from mailwarden_servers import DovecotServer, eventually
from sync_svc.documents import Feedback, LedgerBatch, LedgerEntry
from sync_svc.legacy import LEGACY, move_published
from sync_svc.store import Stores


@pytest.fixture
async def client(mongo_uri: str) -> AsyncIterator[AsyncMongoClient[Document]]:
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(mongo_uri, tz_aware=True, w="majority", journal=True)
    try:
        yield mongo
    finally:
        await mongo.close()


@pytest.fixture
def db(client: AsyncMongoClient[Document]) -> AsyncDatabase[Document]:
    return client[f"legacy_{uuid.uuid4().hex[:10]}"]


@pytest.fixture
async def stores(db: AsyncDatabase[Document]) -> Stores:
    on_db = Stores.on(db)
    await on_db.ensure_indexes()
    return on_db


def legacy(entry: LedgerEntry) -> Document:
    """``entry`` as the older version stored it in ``published`` (answers on the entry)."""
    return {"_id": entry.id, **entry.model_dump(exclude={"id"})}


def answer(system: str) -> Feedback:
    return Feedback(system=system, note="n", at=datetime(2026, 12, 1, tzinfo=UTC))


def older_ledger() -> list[LedgerEntry]:
    """Two IMAP mailboxes (one across two UIDVALIDITYs) and a POP3 one, some answered."""
    imap = [LedgerEntry(id=f"a-7-{u}", m="a", fp=f"fp-a{u}", uid=u, uv=7) for u in range(1, 24)]
    imap += [LedgerEntry(id=f"a-9-{u}", m="a", fp=f"fp-b{u}", uid=u, uv=9) for u in range(1, 6)]
    imap += [LedgerEntry(id=f"b-3-{u}", m="b", fp=f"fp-c{u}", uid=u, uv=3) for u in range(1, 9)]
    pop3 = [
        LedgerEntry(id="p-x", m="p", uidl="x", baseline=True),
        LedgerEntry(id="p-y", m="p", fp="fp-y", uidl="y"),
    ]
    entries = imap + pop3
    entries[4] = entries[4].model_copy(update={"tracked": answer("crm")})
    entries[5] = entries[5].model_copy(update={"tracked": answer("crm"), "rejected": answer("erp")})
    entries[-1] = entries[-1].model_copy(update={"rejected": answer("erp")})
    return entries


async def test_every_older_entry_and_answer_is_moved_then_the_collection_dropped(
    db: AsyncDatabase[Document], stores: Stores
) -> None:
    entries = older_ledger()
    await db[LEGACY].insert_many([legacy(e) for e in entries])

    assert await move_published(db, stores, chunk=7) == len(entries)

    assert LEGACY not in await db.list_collection_names()
    for e in entries:
        assert await stores.answers.ledger_entry(e.id, e.m) == e
    assert await stores.ledger.known_ids([e.id for e in entries] + ["a-7-99"]) == {e.id for e in entries}
    assert await stores.ledger.known_fingerprints("a", ["fp-a3", "fp-b5", "fp-c1"]) == {"fp-a3", "fp-b5"}
    assert (
        await stores.ledger.has_ledger("b")
        and await stores.ledger.has_ledger("p")
        and not await stores.ledger.has_ledger("c")
    )
    assert await stores.answers.feedback_counts("a") == (2, 1)
    assert await stores.answers.feedback_counts("p") == (0, 1)
    assert not await stores.answers.mark_feedback(
        "a-7-5", "a", "tracked", answer("other")
    )  # the first is kept
    assert await stores.answers.mark_feedback("a-7-7", "a", "tracked", answer("crm"))
    assert await move_published(db, stores) == 0  # nothing left to move


async def test_a_move_started_again_stores_nothing_twice(db: AsyncDatabase[Document], stores: Stores) -> None:
    """A process stopped after moving everything but before the drop moves it all again; an answer
    that came in between keeps the first of its kind."""
    entries = older_ledger()
    await db[LEGACY].insert_many([legacy(e) for e in entries])
    await move_published(db, stores, chunk=7)
    batches = await stores.ledger.collection.count_documents({})
    assert await stores.answers.mark_feedback(
        "a-7-5", "a", "rejected", answer("later")
    )  # the new version's answer
    await db[LEGACY].insert_many([legacy(e) for e in entries])  # as if never dropped

    assert await move_published(db, stores, chunk=7) == len(entries)

    assert await stores.ledger.collection.count_documents({}) == batches
    assert await stores.answers.collection.count_documents({}) == 3
    moved = await stores.answers.ledger_entry("a-7-5", "a")
    assert moved is not None and moved.tracked == answer("crm")
    assert moved.rejected is not None and moved.rejected.system == "later"
    assert await stores.answers.feedback_counts("a") == (2, 2)


async def older_database(db: Any) -> int:
    """Turn what this version stored into what the older one did: one ``published`` document per
    message, no ``ledger`` or ``answers``; how many messages."""
    docs = [
        legacy(entry)
        async for d in db["ledger"].find({})
        for entry in [LedgerBatch.model_validate(d).entry(i) for i in d["ids"]]
        if entry is not None
    ]
    await db[LEGACY].insert_many(docs)
    await db["ledger"].drop()
    await db["answers"].drop()
    return len(docs)


@pytest.mark.integration
async def test_a_service_started_over_an_older_database_publishes_nothing_twice(
    bus: Bus,
    dovecot: DovecotServer,
    new_box: Callable[..., Mailbox],
    sync_service: Any,
    db_name: str,
    client: AsyncMongoClient[Document],
) -> None:
    """The older ledger is what recognises the published messages when UIDVALIDITY changes: without
    the move, all five would be published again under the new UIDVALIDITY."""
    box = new_box(process_from=date(2020, 1, 1))
    await asyncio.to_thread(append, dovecot, box.user, box.password, [message(i, "before") for i in range(5)])
    async with sync_service(db_name, sync_idle=False) as app:
        await bus.enable(box)
        first = await bus.wait_emails(box, 5)
        stores: Stores = app.state.stores
        await eventually(lambda: _seen(stores, box, 5), "the five messages counted", 20)
        stored = client[database_name(db_name, "sync-svc")]  # the service's own database
    assert await older_database(stored) == 5
    old = first[0].data.uidvalidity
    assert old is not None
    await asyncio.to_thread(new_uidvalidity, dovecot, box.user, old + 1000)
    await asyncio.to_thread(append, dovecot, box.user, box.password, [message(1, "after")])

    async with sync_service(db_name, sync_idle=False) as app:
        stores = app.state.stores
        await eventually(
            lambda: _rebaselined(stores, box, old + 1000), "the pass under the new UIDVALIDITY", 30
        )
        got = await bus.emails(box)
        assert sorted(e.data.subject for e in got) == sorted([f"before {i}" for i in range(5)] + ["after 1"])
        assert LEGACY not in await stored.list_collection_names()


async def _seen(stores: Stores, box: Mailbox, count: int) -> bool:
    return (await stores.states.get_state(box.mailbox_id)).messages_seen == count


async def _rebaselined(stores: Stores, box: Mailbox, uidvalidity: int) -> bool:
    """The pass under the new UIDVALIDITY is over (its state is written at its end)."""
    return (await stores.states.get_state(box.mailbox_id)).uidvalidity == uidvalidity
