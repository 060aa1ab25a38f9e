"""All MongoDB access of sync-svc: the read models it learns from events, sync state per mailbox,
and the ledger of published messages.

Collections: ``mailboxes``, ``profiles``, ``settings`` (the read model,
:mod:`mailwarden_runtime.readmodels`), ``state`` (watermark, counters, controls, error episode per mailbox),
``ledger`` (one document per batch of published messages, :class:`~sync_svc.documents.LedgerBatch`:
their event ids, and fingerprints of Message-ID, Date and size, so a UIDVALIDITY change or a move
to another protocol re-baselines without publishing anything twice), ``answers`` (what the
consuming systems answered about a message, :mod:`sync_svc.feedback`). ``meta.revision`` grows with every change a
worker must react to, so workers re-read the read models only when something changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TypedDict

from pydantic import BaseModel
from pymongo import ASCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from mailwarden_runtime.mongo import Document
from mailwarden_runtime.readmodels import ReadModels
from sync_svc.batched import Batcher, Failed
from sync_svc.documents import (
    Answers,
    Episode,
    Feedback,
    LedgerBatch,
    LedgerEntry,
    SyncError,
    SyncMode,
    SyncProtocolName,
    SyncStateDoc,
)

REVISION = "revision"
DUPLICATE_KEY = 11000


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


@dataclass(frozen=True, slots=True)
class StateWrite:
    """One mailbox task's write of its state, waiting to go out in a bulk with other mailboxes'."""

    mailbox_id: str
    fields: StateFields
    inc: Counters | None = None

    def update(self) -> Document:
        update: Document = {"$set": _stored(self.fields)}
        if self.inc:
            update["$inc"] = self.inc
        return update


class Repository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self.read = ReadModels(db)
        """Mailboxes, profiles and the org's settings, kept from events (``readmodels.follow``)."""
        self.mailboxes = self.read.mailboxes
        self.state = db["state"]
        self.ledger = db["ledger"]
        self.answers = db["answers"]
        self.meta = db["meta"]
        # Every mailbox task's state reads and writes and ledger calls, sent together (sync_svc.batched).
        self._state_reads: Batcher[str, SyncStateDoc] = Batcher(self._read_states)
        self._state_writes: Batcher[StateWrite, None] = Batcher(self._write_states)
        self._ledger_writes: Batcher[list[LedgerEntry], None] = Batcher(self._insert_ledger)
        self._ledger_reads: Batcher[list[str], set[str]] = Batcher(self._known_ids)
        self._ledger_owners: Batcher[str, bool] = Batcher(self._have_ledgers)

    async def ensure_indexes(self) -> None:
        await self.ledger.create_index([("ids", ASCENDING)])
        await self.ledger.create_index([("m", ASCENDING)])
        await self.answers.create_index([("m", ASCENDING)])

    # ---- change counter ------------------------------------------------------------------------

    async def bump(self) -> None:
        await self.meta.update_one({"_id": REVISION}, {"$inc": {"n": 1}}, upsert=True)

    async def revision(self) -> int:
        doc = await self.meta.find_one({"_id": REVISION})
        return int(doc["n"]) if doc else 0

    # ---- sync state ------------------------------------------------------------------------------

    async def get_state(self, mailbox_id: str) -> SyncStateDoc:
        """The mailbox's state (read in one ``$in`` with other mailboxes')."""
        return await self._state_reads(mailbox_id)

    async def _read_states(self, mailbox_ids: Sequence[str]) -> list[SyncStateDoc]:
        found = await self.states(set(mailbox_ids))
        return [found.get(m) or SyncStateDoc(id=m) for m in mailbox_ids]

    async def states(self, mailbox_ids: Iterable[str]) -> dict[str, SyncStateDoc]:
        found = self.state.find({"_id": {"$in": list(mailbox_ids)}})
        return {(s := SyncStateDoc.model_validate(d)).id: s async for d in found}

    async def update_state(self, mailbox_id: str, fields: StateFields, inc: Counters | None = None) -> None:
        """``$set`` (and ``$inc``) on the mailbox's state, in one bulk write with other mailboxes'."""
        await self._state_writes(StateWrite(mailbox_id, fields, inc))

    async def _write_states(self, writes: Sequence[StateWrite]) -> list[Failed | None]:
        """One unordered bulk of upserts; an upsert that lost a race to another insert of the same
        document (a control's) is applied again on its own, as an update."""
        updates = [w.update() for w in writes]
        ops = [UpdateOne({"_id": w.mailbox_id}, u, upsert=True) for w, u in zip(writes, updates, strict=True)]
        outcomes: list[Failed | None] = [None] * len(writes)
        try:
            await self.state.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            if exc.details.get("writeConcernErrors"):
                raise
            for error in exc.details.get("writeErrors", []):
                i = int(error["index"])
                if error.get("code") != DUPLICATE_KEY:
                    outcomes[i] = Failed(BulkWriteError({"writeErrors": [error]}))
                    continue
                try:
                    await self.state.update_one({"_id": writes[i].mailbox_id}, updates[i], upsert=True)
                except Exception as again:
                    outcomes[i] = Failed(again)
        return outcomes

    async def control(self, mailbox_id: str, fields: Controls, unset: Iterable[str] = ()) -> SyncStateDoc:
        """A pause, resume or resync: stored, then every worker sees the revision move."""
        update: Document = {"$set": _stored(fields), "$inc": {"generation": 1}}
        if unset:
            update["$unset"] = dict.fromkeys(unset, "")
        doc = await self.state.find_one_and_update(
            {"_id": mailbox_id}, update, upsert=True, return_document=ReturnDocument.AFTER
        )
        await self.bump()
        return SyncStateDoc(id=mailbox_id) if doc is None else SyncStateDoc.model_validate(doc)

    # ---- published messages ------------------------------------------------------------------------

    async def record_published(self, entries: list[LedgerEntry]) -> None:
        """Remember published messages (in one insert with other mailboxes'); ones already
        remembered (a replay) are skipped."""
        if entries:
            await self._ledger_writes(entries)

    async def _insert_ledger(self, batches: Sequence[list[LedgerEntry]]) -> list[Failed | None]:
        """One document per batch handed in (each is one mailbox's), all in one insert. A copy
        already stored (a retried insert) is no error."""
        outcomes: list[Failed | None] = [None] * len(batches)
        try:
            await self.ledger.insert_many([LedgerBatch.of(batch) for batch in batches], ordered=False)
        except BulkWriteError as exc:
            if exc.details.get("writeConcernErrors"):
                raise
            for error in exc.details.get("writeErrors", []):
                if error.get("code") != DUPLICATE_KEY:
                    outcomes[int(error["index"])] = Failed(BulkWriteError({"writeErrors": [error]}))
        return outcomes

    async def has_ledger(self, mailbox_id: str) -> bool:
        """Whether anything of the mailbox was ever stored in the ledger (asked in one ``distinct``
        with other mailboxes': 1,000 first syncs at once each asked alone, 1 query per mailbox)."""
        return await self._ledger_owners(mailbox_id)

    async def _have_ledgers(self, mailbox_ids: Sequence[str]) -> list[bool]:
        found = set(await self.ledger.distinct("m", {"m": {"$in": list(mailbox_ids)}}))
        return [m in found for m in mailbox_ids]

    async def known_ids(self, ids: Iterable[str]) -> set[str]:
        """Which of these event ids the ledger has (in one ``$in`` with other mailboxes' lookups)."""
        wanted = list(ids)
        return await self._ledger_reads(wanted) if wanted else set()

    async def _known_ids(self, lookups: Sequence[list[str]]) -> list[set[str]]:
        wanted = [i for ids in lookups for i in ids]
        found: set[str] = set()
        async for d in self.ledger.find({"ids": {"$in": wanted}}, {"ids": 1, "_id": 0}):
            found.update(d["ids"])
        return [found.intersection(ids) for ids in lookups]

    async def mark_feedback(
        self, email_id: str, mailbox_id: str, kind: Literal["tracked", "rejected"], answer: Feedback
    ) -> bool:
        """Keep a consuming system's first answer of ``kind`` on a published message; False when the
        message was not published here or already had one."""
        if await self.ledger.find_one({"ids": email_id, "m": mailbox_id}, {"_id": 1}) is None:
            return False
        try:
            res = await self.answers.update_one(
                {"_id": email_id, kind: None},
                {"$set": {kind: answer.model_dump()}, "$setOnInsert": {"m": mailbox_id}},
                upsert=True,
            )
        except DuplicateKeyError:  # the answers exist and already have one of this kind
            return False
        return res.modified_count == 1 or res.upserted_id is not None

    async def ledger_entry(self, email_id: str, mailbox_id: str) -> LedgerEntry | None:
        doc = await self.ledger.find_one({"ids": email_id, "m": mailbox_id})
        entry = None if doc is None else LedgerBatch.model_validate(doc).entry(email_id)
        if entry is None:
            return None
        if (answered := await self.answers.find_one({"_id": email_id})) is not None:
            answers = Answers.model_validate(answered)
            entry = entry.model_copy(update={"tracked": answers.tracked, "rejected": answers.rejected})
        return entry

    async def feedback_counts(self, mailbox_id: str) -> tuple[int, int]:
        """How many of the mailbox's messages were tracked, and how many rejected (one answers
        document per message: exact however often an answer was delivered)."""
        tracked = await self.answers.count_documents({"m": mailbox_id, "tracked": {"$ne": None}})
        rejected = await self.answers.count_documents({"m": mailbox_id, "rejected": {"$ne": None}})
        return tracked, rejected

    async def known_fingerprints(self, mailbox_id: str, fps: Iterable[str]) -> set[str]:
        """Which of these fingerprints the mailbox's ledger has (re-baselining only: the mailbox's
        batches are read by its ``m`` index, not a per-message index every insert would pay for)."""
        wanted = set(fps)
        if not wanted:
            return set()
        found: set[str] = set()
        cursor = self.ledger.find({"m": mailbox_id, "fps": {"$in": list(wanted)}}, {"fps": 1, "_id": 0})
        async for d in cursor:
            found.update(f for f in d["fps"] if f in wanted)
        return found
