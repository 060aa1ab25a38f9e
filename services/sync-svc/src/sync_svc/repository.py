"""All MongoDB access of sync-svc: the read models it learns from events, sync state per mailbox,
and the ledger of published messages.

Collections: ``mailboxes``, ``profiles``, ``settings`` (the read model,
:mod:`mailwarden_runtime.readmodels`), ``state`` (watermark, counters, controls, error episode per mailbox),
``published`` (one document per published message: ``_id`` = event id, the mailbox and a
fingerprint of Message-ID, Date and size, so a UIDVALIDITY change or a move to another protocol
re-baselines without publishing anything twice; and what the consuming systems answered about it,
:mod:`sync_svc.feedback`). ``meta.revision`` grows with every change a
worker must react to, so workers re-read the read models only when something changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal, TypedDict

from pydantic import BaseModel
from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from mailwarden_runtime.mongo import Document
from mailwarden_runtime.readmodels import ReadModels
from sync_svc.documents import (
    Episode,
    Feedback,
    LedgerEntry,
    SyncError,
    SyncMode,
    SyncProtocolName,
    SyncStateDoc,
)

REVISION = "revision"


class StateFields(TypedDict, total=False):
    """What a sync writes to its mailbox's :class:`SyncStateDoc` (a ``$set`` of these)."""

    protocol: SyncProtocolName
    uidvalidity: int
    last_uid: int
    mode: SyncMode
    last_sync_at: datetime
    last_error: SyncError | None
    episode: Episode | None
    recovered_at: datetime
    resync_from: datetime | None


class Counters(TypedDict, total=False):
    messages_seen: int


class Controls(TypedDict, total=False):
    """What an operation sets (pause, resume, resync); ``generation`` moves with each."""

    paused: bool
    resync_from: datetime
    controlled_by: str
    """Who asked for the last control (``token:<sub>`` / ``jwt:<sub>``)."""
    controlled_at: datetime


def _stored(fields: StateFields | Controls) -> dict[str, object]:
    """As MongoDB keeps them: nested models as documents (their times as BSON dates)."""
    return {k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in fields.items()}


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

    async def get_state(self, mailbox_id: str) -> SyncStateDoc:
        doc = await self.state.find_one({"_id": mailbox_id})
        return SyncStateDoc(id=mailbox_id) if doc is None else SyncStateDoc.model_validate(doc)

    async def states(self, mailbox_ids: Iterable[str]) -> dict[str, SyncStateDoc]:
        found = self.state.find({"_id": {"$in": list(mailbox_ids)}})
        return {(s := SyncStateDoc.model_validate(d)).id: s async for d in found}

    async def update_state(
        self, mailbox_id: str, fields: StateFields, inc: Counters | None = None
    ) -> SyncStateDoc:
        update: dict[str, Any] = {"$set": _stored(fields)}
        if inc:
            update["$inc"] = inc
        doc = await self.state.find_one_and_update(
            {"_id": mailbox_id}, update, upsert=True, return_document=ReturnDocument.AFTER
        )
        return SyncStateDoc(id=mailbox_id) if doc is None else SyncStateDoc.model_validate(doc)

    async def control(self, mailbox_id: str, fields: Controls, unset: Iterable[str] = ()) -> SyncStateDoc:
        """A pause, resume or resync: stored, then every worker sees the revision move."""
        update: dict[str, Any] = {"$set": _stored(fields), "$inc": {"generation": 1}}
        if unset:
            update["$unset"] = dict.fromkeys(unset, "")
        doc = await self.state.find_one_and_update(
            {"_id": mailbox_id}, update, upsert=True, return_document=ReturnDocument.AFTER
        )
        await self.bump()
        return SyncStateDoc(id=mailbox_id) if doc is None else SyncStateDoc.model_validate(doc)

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

    async def mark_feedback(
        self, email_id: str, mailbox_id: str, kind: Literal["tracked", "rejected"], answer: Feedback
    ) -> bool:
        """Keep a consuming system's first answer of ``kind`` on a published message; False when the
        message was not published here or already had one."""
        res = await self.published.update_one(
            {"_id": email_id, "m": mailbox_id, kind: None}, {"$set": {kind: answer.model_dump()}}
        )
        return res.modified_count == 1

    async def ledger_entry(self, email_id: str, mailbox_id: str) -> LedgerEntry | None:
        doc = await self.published.find_one({"_id": email_id, "m": mailbox_id})
        return None if doc is None else LedgerEntry.model_validate(doc)

    async def feedback_counts(self, mailbox_id: str) -> tuple[int, int]:
        """How many of the mailbox's messages were tracked, and how many rejected (from the ledger:
        exact however often an answer was delivered)."""
        tracked = await self.published.count_documents({"m": mailbox_id, "tracked": {"$ne": None}})
        rejected = await self.published.count_documents({"m": mailbox_id, "rejected": {"$ne": None}})
        return tracked, rejected

    async def known_fingerprints(self, mailbox_id: str, fps: Iterable[str]) -> set[str]:
        wanted = list(fps)
        if not wanted:
            return set()
        cursor = self.published.find({"m": mailbox_id, "fp": {"$in": wanted}}, {"fp": 1})
        return {d["fp"] async for d in cursor}
