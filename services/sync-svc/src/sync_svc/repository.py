"""All MongoDB access of sync-svc: the read models it learns from events, sync state per mailbox,
and the ledger of published messages.

Collections: ``mailboxes``, ``profiles``, ``settings`` (the read model,
:mod:`mailwarden_runtime.readmodels`), ``state`` (watermark, counters, controls, error episode per mailbox),
``published`` (one document per published message: ``_id`` = event id, the mailbox and a
fingerprint of Message-ID, Date and size, so a UIDVALIDITY change or a move to another protocol
re-baselines without publishing anything twice). ``meta.revision`` grows with every change a
worker must react to, so workers re-read the read models only when something changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from mailwarden_runtime.mongo import Document
from mailwarden_runtime.readmodels import ReadModels

REVISION = "revision"


class Repository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self.read = ReadModels(db)
        """Mailboxes, profiles and the org's settings, kept from events (``readmodels.follow``)."""
        self.mailboxes = self.read.mailboxes
        self.state = db["state"]
        self.published = db["published"]
        self.meta = db["meta"]

    async def ensure_indexes(self) -> None:
        await self.published.create_index([("m", ASCENDING), ("fp", ASCENDING)])

    # ---- change counter ------------------------------------------------------------------------

    async def bump(self) -> None:
        await self.meta.update_one({"_id": REVISION}, {"$inc": {"n": 1}}, upsert=True)

    async def revision(self) -> int:
        doc = await self.meta.find_one({"_id": REVISION})
        return int(doc["n"]) if doc else 0

    # ---- sync state ------------------------------------------------------------------------------

    async def get_state(self, mailbox_id: str) -> Document:
        return await self.state.find_one({"_id": mailbox_id}) or {"_id": mailbox_id}

    async def states(self, mailbox_ids: Iterable[str]) -> dict[str, Document]:
        return {d["_id"]: d async for d in self.state.find({"_id": {"$in": list(mailbox_ids)}})}

    async def update_state(self, mailbox_id: str, fields: Document, inc: Document | None = None) -> Document:
        update: dict[str, Any] = {"$set": fields}
        if inc:
            update["$inc"] = inc
        doc = await self.state.find_one_and_update(
            {"_id": mailbox_id}, update, upsert=True, return_document=ReturnDocument.AFTER
        )
        return doc or {"_id": mailbox_id}

    async def control(self, mailbox_id: str, fields: Document, unset: Iterable[str] = ()) -> Document:
        """A pause, resume or resync: stored, then every worker sees the revision move."""
        update: dict[str, Any] = {"$set": fields, "$inc": {"generation": 1}}
        if unset:
            update["$unset"] = dict.fromkeys(unset, "")
        doc = await self.state.find_one_and_update(
            {"_id": mailbox_id}, update, upsert=True, return_document=ReturnDocument.AFTER
        )
        await self.bump()
        return doc or {"_id": mailbox_id}

    # ---- published messages ------------------------------------------------------------------------

    async def record_published(self, docs: list[Document]) -> None:
        """Remember published messages; ones already remembered (a replay) are skipped."""
        if not docs:
            return
        try:
            await self.published.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                raise

    async def known_ids(self, ids: Iterable[str]) -> set[str]:
        wanted = list(ids)
        if not wanted:
            return set()
        return {d["_id"] async for d in self.published.find({"_id": {"$in": wanted}}, {"_id": 1})}

    async def known_fingerprints(self, mailbox_id: str, fps: Iterable[str]) -> set[str]:
        wanted = list(fps)
        if not wanted:
            return set()
        cursor = self.published.find({"m": mailbox_id, "fp": {"$in": wanted}}, {"fp": 1})
        return {d["fp"] async for d in cursor}
