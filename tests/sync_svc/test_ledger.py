"""The ledger of published messages, one document per stored batch, against the real Mongo-wire server.

A batch is stored as parallel lists under a multikey index on its event ids: every question the
syncs and the feedback handlers ask must get the answer one document per message gave, also when a
replay stored some entries twice, cut into batches differently.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from pymongo import AsyncMongoClient

from mailwarden_runtime.mongo import Document
from sync_svc.documents import Feedback, LedgerEntry
from sync_svc.store import Stores


@pytest.fixture
async def stores(mongo_uri: str) -> AsyncIterator[Stores]:
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        mongo_uri, tz_aware=True, w="majority", journal=True
    )
    try:
        on_db = Stores.on(client[f"ledger_{uuid.uuid4().hex[:10]}"])
        await on_db.ensure_indexes()
        yield on_db
    finally:
        await client.close()


def imap_entries(mailbox_id: str, uids: range, uv: int = 7) -> list[LedgerEntry]:
    return [LedgerEntry(id=f"{mailbox_id}-{uv}-{u}", m=mailbox_id, fp=f"fp-{u}", uid=u, uv=uv) for u in uids]


def answer(system: str) -> Feedback:
    return Feedback(system=system, note="n", at=datetime(2026, 12, 4, tzinfo=UTC))


async def test_a_batch_is_one_document_and_each_entry_reads_back_as_stored(stores: Stores) -> None:
    entries = imap_entries("m1", range(1, 101))
    await stores.ledger.record_published(entries)

    assert await stores.ledger.collection.count_documents({}) == 1
    assert await stores.answers.ledger_entry("m1-7-42", "m1") == entries[41]
    assert await stores.answers.ledger_entry("m1-7-42", "m2") is None  # another mailbox's id is not ours
    assert await stores.answers.ledger_entry("m1-7-101", "m1") is None


async def test_known_ids_and_fingerprints_are_the_union_of_every_copy(stores: Stores) -> None:
    """A replay after a crash stores a batch again, cut differently: nothing is lost or doubled."""
    await stores.ledger.record_published(imap_entries("m1", range(1, 51)))
    await stores.ledger.record_published(imap_entries("m1", range(30, 81)))  # the replay, overlapping
    await stores.ledger.record_published(imap_entries("m2", range(1, 11)))

    wanted = [f"m1-7-{u}" for u in range(75, 91)]
    assert await stores.ledger.known_ids(wanted) == {f"m1-7-{u}" for u in range(75, 81)}
    assert await stores.ledger.known_fingerprints("m1", ["fp-5", "fp-80", "fp-81"]) == {"fp-5", "fp-80"}
    assert await stores.ledger.known_fingerprints("m2", ["fp-20", "fp-5"]) == {"fp-5"}
    assert (await stores.answers.ledger_entry("m1-7-40", "m1")) == imap_entries("m1", range(40, 41))[0]


async def test_the_first_answer_of_each_kind_is_kept_and_counted_once(stores: Stores) -> None:
    await stores.ledger.record_published(imap_entries("m1", range(1, 11)))
    await stores.ledger.record_published(imap_entries("m1", range(5, 8)))  # a second copy of some

    assert await stores.answers.mark_feedback("m1-7-6", "m1", "tracked", answer("crm"))
    assert not await stores.answers.mark_feedback("m1-7-6", "m1", "tracked", answer("other"))
    assert await stores.answers.mark_feedback("m1-7-6", "m1", "rejected", answer("erp"))
    assert await stores.answers.mark_feedback("m1-7-2", "m1", "rejected", answer("erp"))
    assert not await stores.answers.mark_feedback("m1-7-99", "m1", "tracked", answer("crm"))  # not published
    assert not await stores.answers.mark_feedback(
        "m1-7-3", "m2", "tracked", answer("crm")
    )  # not this mailbox's

    entry = await stores.answers.ledger_entry("m1-7-6", "m1")
    assert entry is not None and entry.uid == 6 and entry.uv == 7
    assert entry.tracked is not None and entry.tracked.system == "crm"
    assert entry.rejected is not None and entry.rejected.system == "erp"
    assert await stores.answers.feedback_counts("m1") == (1, 2)
    assert await stores.answers.feedback_counts("m2") == (0, 0)


async def test_pop3_entries_keep_their_uidl_and_baseline_mark(stores: Stores) -> None:
    seen = LedgerEntry(id="p-a", m="p", uidl="a", baseline=True)
    published = LedgerEntry(id="p-b", m="p", fp="fp-b", uidl="b")
    await stores.ledger.record_published([published, seen])

    assert await stores.answers.ledger_entry("p-a", "p") == seen
    assert await stores.answers.ledger_entry("p-b", "p") == published
    assert await stores.ledger.known_ids(["p-a", "p-b", "p-c"]) == {"p-a", "p-b"}
