"""The mailboxes: their settings and test state, their sealed logins, and which ones an operator's
sync pause leaves to the scheduled re-tests. Every write of a mailbox is a :class:`MailboxWrite`."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pymongo import ASCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, OperationFailure

from contracts.models import DeliveryMethod, SealedSecret
from mailbox_svc.documents import (
    MailboxDoc,
    MailboxEmail,
    MailboxLastTest,
    MailboxProfile,
    SealedLogins,
    SyncPaused,
)
from mailbox_svc.models import MailboxFilter
from mailwarden_runtime.documents import Stored, fields
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.outbox import OutboxEntry, new_document_outbox, with_outbox

MAILBOXES = "mailboxes"
SYNC_PAUSED = "sync_paused"  # one small document per mailbox whose sync an operator paused
SYNCED = DeliveryMethod.SERVER_SIDE_SYNC.value
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # before any retry time: the lower end of the due range
PENDING_APPROVAL_INDEX = "approval_pending"
DUE_INDEX = "next_retry_at_due"


def filter_query(f: MailboxFilter) -> Document:
    q: Document = {}
    for name in ("profile_id", "approval", "incoming_status", "outgoing_status", "active"):
        value = getattr(f, name)
        if value is not None:
            q[name] = value.value if hasattr(value, "value") else value
    if f.owner_kind is not None:
        q["owner.kind"] = f.owner_kind.value
    if f.owner_id is not None:
        q["owner.id"] = f.owner_id
    if f.enabled is not None:
        q["$or" if f.enabled else "$and"] = (
            [{"enabled_incoming": True}, {"enabled_outgoing": True}]
            if f.enabled
            else [{"enabled_incoming": False}, {"enabled_outgoing": False}]
        )
    return q


@dataclass(frozen=True, slots=True)
class MailboxWrite:
    """One write of a mailbox as it was read (``doc``): the fields it sets, as stored (built from
    the model: ``documents.changes``, ``documents.fields``), the version moved on, its events in
    the same write (outbox). It applies only while the mailbox is still at the version read and
    its ``unchanged`` fields still hold the values read (e.g. the pending test it was decided on)."""

    doc: MailboxDoc
    fields: Document
    events: Sequence[OutboxEntry] = ()
    unchanged: Collection[str] = ()
    updated_at: datetime | None = None
    """When it was made: written as the mailbox's ``updated_at`` too."""
    versioned: bool = True
    """False: bookkeeping that leaves the version as it is, so no versioned write loses a race to it."""

    def query(self) -> Document:
        q: Document = {"_id": self.doc.id, "version": self.doc.version}
        return q | self.doc.stored(include=self.unchanged) if self.unchanged else q

    def update(self) -> Document:
        fields = self.fields if self.updated_at is None else self.fields | {"updated_at": self.updated_at}
        update: Document = {"$set": fields}
        if self.versioned:
            update["$inc"] = {"version": 1}
        return with_outbox(update, self.events)


@dataclass(frozen=True, slots=True)
class RetestFilter:
    """Mailboxes due a scheduled re-test (``retests.py``): active, idle (no test pending or
    scheduled), last tested before ``cutoff``, and enabled in a direction nothing exercises."""

    cutoff: datetime
    skip: Collection[str] = ()
    """Left out (they could not be tested)."""
    paused: Sequence[str] | None = None
    """None: those not synchronized continuously; else those of these whose incoming sync (enabled)
    an operator paused."""

    def query(self) -> Document:
        idle: Document = {
            "active": True,
            "pending_test_id": None,
            "next_retry_at": None,
            "last_test_completed_at": {"$lte": self.cutoff},
        }
        if self.paused is not None:
            skip = set(self.skip)
            return idle | {
                "_id": {"$in": [m for m in self.paused if m not in skip]},
                "enabled_incoming": True,
            }
        if self.skip:
            idle["_id"] = {"$nin": list(self.skip)}
        return idle | {
            "$and": [
                {"$or": [{"enabled_incoming": True}, {"enabled_outgoing": True}]},
                {"$or": [{"enabled_incoming": False}, {"incoming_delivery": {"$ne": SYNCED}}]},
            ]
        }


class MailboxStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.mailboxes: AsyncCollection[Document] = db[MAILBOXES]
        self.sync_paused: AsyncCollection[Document] = db[SYNC_PAUSED]

    async def ensure_indexes(self) -> None:
        for name in ("profile_id", "owner.id"):
            await self.mailboxes.create_index(name)
        # Every index costs each insert and update of a mailbox its bookkeeping (SecantusDB: 0.34 ms
        # of CPU per inserted mailbox with five indexes, 0.22 with two). No query finds a mailbox by
        # its pending test alone (always with its _id); the status filters of the list are not
        # selective enough to pay for it on every test result (a page of 10,000 scans ~0.2 s).
        # Two are partial, holding only what their searches look for: the mailboxes waiting for
        # approval (an approved one, e.g. created approved in bulk, writes no entry) and those with
        # a retry or watchdog time (a test's result clearing it writes none); bench.insert_cost.
        for old in (
            "pending_test_id_1",
            "incoming_status_1",
            "outgoing_status_1",
            "approval_1",
            "next_retry_at_1",
        ):
            with contextlib.suppress(OperationFailure):
                await self.mailboxes.drop_index(old)
        await self.mailboxes.create_index(
            "approval", name=PENDING_APPROVAL_INDEX, partialFilterExpression={"approval": "pending"}
        )
        await self.mailboxes.create_index(
            "next_retry_at", name=DUE_INDEX, partialFilterExpression={"next_retry_at": {"$gte": EPOCH}}
        )

    async def insert(self, doc: MailboxDoc, entries: list[OutboxEntry]) -> bool:
        """Store a new mailbox with its first events; False when the id is taken."""
        try:
            await self.mailboxes.insert_one({**doc.stored(), **new_document_outbox(entries)})
        except DuplicateKeyError:
            return False
        return True

    async def insert_many(self, docs: list[tuple[MailboxDoc, list[OutboxEntry]]]) -> None:
        await self.mailboxes.insert_many(
            [{**doc.stored(), **new_document_outbox(entries)} for doc, entries in docs], ordered=True
        )

    async def existing_ids(self, ids: list[str]) -> list[str]:
        return await self._ids({"_id": {"$in": ids}}, ordered=False)

    async def get(self, mailbox_id: str) -> MailboxDoc | None:
        doc = await self.mailboxes.find_one({"_id": mailbox_id}, {"outbox": 0, "outbox_pending": 0})
        return None if doc is None else MailboxDoc.model_validate(doc)

    async def get_many(self, mailbox_ids: list[str]) -> dict[str, MailboxDoc]:
        cursor = self.mailboxes.find({"_id": {"$in": mailbox_ids}}, {"outbox": 0, "outbox_pending": 0})
        return {doc.id: doc for doc in _mailboxes(await cursor.to_list(None))}

    async def page(self, f: MailboxFilter, limit: int, after: str | None) -> list[MailboxDoc]:
        q = filter_query(f)
        if after is not None:
            q["_id"] = {"$gt": after}
        cursor = self.mailboxes.find(q, {"outbox": 0}).sort("_id", ASCENDING).limit(limit)
        return _mailboxes(await cursor.to_list(None))

    async def select_ids(self, f: MailboxFilter, limit: int) -> list[str]:
        return await self._ids(filter_query(f), limit)

    async def update(self, write: MailboxWrite) -> MailboxDoc | None:
        """Optimistic update: applies only if the mailbox is still as read; returns the new document."""
        doc = await self.mailboxes.find_one_and_update(
            write.query(), write.update(), projection={"outbox": 0}, return_document=ReturnDocument.AFTER
        )
        return None if doc is None else MailboxDoc.model_validate(doc)

    async def update_if(self, write: MailboxWrite) -> bool:
        """Like :meth:`update` without reading the document back (cheaper on slow servers)."""
        return (await self.mailboxes.update_one(write.query(), write.update())).modified_count == 1

    async def bulk_update(self, writes: Sequence[MailboxWrite]) -> int:
        """Each write as :meth:`update_if`, in one round trip; returns how many applied."""
        if not writes:
            return 0
        ops = [UpdateOne(w.query(), w.update()) for w in writes]
        return (await self.mailboxes.bulk_write(ops, ordered=False)).modified_count

    async def job_mailbox_ids(self, profile_id: str, after: str | None) -> list[str]:
        """The ids of a profile's active mailboxes after ``after``, in order (see jobqueue.py)."""
        q: Document = {"profile_id": profile_id, "active": True}
        if after is not None:
            q["_id"] = {"$gt": after}
        return await self._ids(q)

    async def count_for_profile(self, profile_id: str) -> int:
        return await self.mailboxes.count_documents({"profile_id": profile_id, "active": True})

    async def last_tests(self, profile_id: str, ids: Collection[str] | None = None) -> dict[str, str | None]:
        """The last applied test of each of a profile's mailboxes that waits on no test (one read);
        ``ids``: only these (read by id alone, which SecantusDB serves from the ``_id`` index)."""
        if ids is None:
            query = {"profile_id": profile_id, "pending_test_id": None}
            docs = await self.mailboxes.find(query, {"last_test_id": 1}).to_list(None)
            return {m.id: m.last_test_id for m in map(MailboxLastTest.model_validate, docs)}
        if not ids:
            return {}
        fields = {"profile_id": 1, "last_test_id": 1, "pending_test_id": 1}
        docs = await self.mailboxes.find({"_id": {"$in": sorted(ids)}}, fields).to_list(None)
        found = map(MailboxLastTest.model_validate, docs)
        return {
            m.id: m.last_test_id for m in found if m.profile_id == profile_id and m.pending_test_id is None
        }

    async def due_retries(self, now: datetime, limit: int) -> list[MailboxDoc]:
        """The longest-due retries first, through the partial ``next_retry_at`` index.

        A range with both ends: SecantusDB serves ``{$gte: EPOCH, $lte: now}`` from the index
        (~1 ms at 10,000 mailboxes) but reads every mailbox for ``{$ne: None, $lte: now}`` or a
        bare ``$lte`` (250-300 ms of its CPU per search, every ``scheduler_poll_s``); the lower
        end is also the index's filter, so the query may use it (MongoDB too).
        """
        q = {"next_retry_at": {"$gte": EPOCH, "$lte": now}}
        found = self.mailboxes.find(q, {"outbox": 0}).sort("next_retry_at", 1).limit(limit)
        return _mailboxes(await found.to_list(None))

    async def due_retests(self, f: RetestFilter, limit: int) -> list[MailboxDoc]:
        """The longest untested first."""
        cursor = self.mailboxes.find(f.query(), {"outbox": 0, "outbox_pending": 0})
        return _mailboxes(await cursor.sort("last_test_completed_at", 1).limit(limit).to_list(None))

    async def set_sync_paused(self, mailbox_id: str, paused: bool, at: datetime) -> None:
        """Remember a mailbox whose sync an operator paused (resumed: forgotten)."""
        if paused:
            await self.sync_paused.update_one(
                {"_id": mailbox_id}, {"$set": fields(SyncPaused, at=at)}, upsert=True
            )
        else:
            await self.sync_paused.delete_one({"_id": mailbox_id})

    async def sync_paused_ids(self, limit: int) -> list[str]:
        return [Stored.model_validate(d).id async for d in self.sync_paused.find({}, {"_id": 1}).limit(limit)]

    async def owned(self, user_id: str, mailbox_ids: Collection[str], limit: int) -> list[MailboxEmail]:
        """The mailboxes a user owns and these ones (granted by id), in id order."""
        q: Document = {
            "$or": [{"owner.kind": "user", "owner.id": user_id}, {"_id": {"$in": sorted(mailbox_ids)}}]
        }
        cursor = self.mailboxes.find(q, {"_id": 1, "email": 1}).sort("_id", 1).limit(limit)
        return [MailboxEmail.model_validate(d) async for d in cursor]

    async def profile_ids_of(self, ids: list[str]) -> set[str]:
        docs = await self.mailboxes.find({"_id": {"$in": ids}}, {"profile_id": 1}).to_list(None)
        return {m.profile_id for m in map(MailboxProfile.model_validate, docs) if m.profile_id}

    async def _ids(self, q: Document, limit: int = 0, *, ordered: bool = True) -> list[str]:
        """The ids of the mailboxes ``q`` finds, in id order unless not ``ordered`` (at most
        ``limit``; 0: all)."""
        found = self.mailboxes.find(q, {"_id": 1}).limit(limit)
        if ordered:
            found = found.sort("_id", ASCENDING)
        return [Stored.model_validate(d).id for d in await found.to_list(None)]

    # ---- sealed logins (key rotation) -----------------------------------------------------------

    async def all_with_credentials(self, after: str | None, limit: int) -> list[SealedLogins]:
        q: Document = {"credentials": {"$ne": {}}}
        if after is not None:
            q["_id"] = {"$gt": after}
        found = self.mailboxes.find(q, {"credentials": 1}).sort("_id", 1).limit(limit)
        return [SealedLogins.model_validate(d) for d in await found.to_list(None)]

    async def credentials_of(self, mailbox_id: str) -> SealedLogins | None:
        doc = await self.mailboxes.find_one({"_id": mailbox_id}, {"credentials": 1})
        return None if doc is None else SealedLogins.model_validate(doc)

    async def swap_credentials(self, old: SealedLogins, new: dict[str, SealedSecret | None]) -> bool:
        """Replace the ciphertexts only if nobody changed them meanwhile (rotation runs online)."""
        res = await self.mailboxes.update_one(
            {"_id": old.id, **old.stored(include={"credentials"})},
            {"$set": fields(SealedLogins, credentials=new)},
        )
        return res.modified_count == 1


def _mailboxes(docs: list[Document]) -> list[MailboxDoc]:
    return [MailboxDoc.model_validate(d) for d in docs]
