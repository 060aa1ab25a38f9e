"""The ledger as it was before batches: ``published``, one document per message, moved into
``ledger`` batches and ``answers`` at start, then dropped.

A process that stops midway starts the move over: the chunks are read in ``_id`` order, so each
batch gets the same ``_id`` again (``published:<its first event id>``) and is not stored twice; an
answer already moved keeps the first one of its kind, as :meth:`~sync_svc.store.answers.AnswerStore.mark_feedback` does.
The move finishes before the worker or the feedback consumers start (startup hooks run first), so
no sync looks up a ledger that is half there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Literal

from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from mailwarden_runtime.mongo import Document
from sync_svc.documents import LedgerBatch, LedgerEntry
from sync_svc.store import Stores
from sync_svc.store.ledger import DUPLICATE_KEY

LEGACY = "published"
CHUNK = 500
KINDS: tuple[Literal["tracked"], Literal["rejected"]] = ("tracked", "rejected")


async def move_published(db: AsyncDatabase[Document], stores: Stores, chunk: int = CHUNK) -> int:
    """Move every ``published`` document into the ledger; how many were moved (0 when there was
    no such collection)."""
    if LEGACY not in await db.list_collection_names():
        return 0
    moved = 0
    cursor = db[LEGACY].find({}).sort("_id", 1)
    while docs := await cursor.to_list(chunk):
        entries = [LedgerEntry.model_validate(d) for d in docs]
        await _store_answers(stores, entries)  # before their batches: an entry found has its answers
        await _store_batches(stores, _batches(entries))
        moved += len(entries)
    await db[LEGACY].drop()
    return moved


def _batches(entries: Sequence[LedgerEntry]) -> list[list[LedgerEntry]]:
    """One batch per mailbox and UIDVALIDITY in the chunk (a batch has one ``m`` and one ``uv``)."""
    grouped: dict[tuple[str, int | None], list[LedgerEntry]] = {}
    for e in entries:
        grouped.setdefault((e.m, e.uv), []).append(e)
    return list(grouped.values())


async def _store_batches(stores: Stores, batches: list[list[LedgerEntry]]) -> None:
    docs = [{"_id": f"{LEGACY}:{batch[0].id}", **LedgerBatch.of(batch)} for batch in batches]
    await _ignoring_duplicates(stores.ledger.collection.insert_many(docs, ordered=False))


async def _store_answers(stores: Stores, entries: Sequence[LedgerEntry]) -> None:
    ops = [
        UpdateOne(
            {"_id": e.id, kind: None},
            {"$set": {kind: answer.model_dump()}, "$setOnInsert": {"m": e.m}},
            upsert=True,
        )
        for e in entries
        for kind in KINDS
        if (answer := getattr(e, kind)) is not None
    ]
    if ops:
        await _ignoring_duplicates(stores.answers.collection.bulk_write(ops, ordered=False))


async def _ignoring_duplicates(write: Awaitable[object]) -> None:
    """Await an unordered write; what a former attempt stored already (duplicate keys) is no error."""
    try:
        await write
    except BulkWriteError as exc:
        if exc.details.get("writeConcernErrors") or any(
            e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])
        ):
            raise
