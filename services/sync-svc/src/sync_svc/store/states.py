"""Sync state, one document per mailbox (``state``, :class:`~sync_svc.documents.SyncStateDoc`):
watermark, counters, controls and error episode; every mailbox task's reads and writes of it go
out together (:mod:`sync_svc.batched`).

What is written goes in as :class:`StateFields`, :class:`Counters` and :class:`Controls`: typed
dicts, not models, because a write is a partial ``$set`` (``$inc``) of just the keys a sync or an
operation sets, and a key set to ``None`` (clearing an episode) must differ from a key left out;
the document is read back as the :class:`~sync_svc.documents.SyncStateDoc` model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict

from pydantic import BaseModel
from pymongo import ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from mailwarden_runtime.mongo import Document
from sync_svc.batched import Batcher, Failed
from sync_svc.documents import Episode, SyncError, SyncMode, SyncProtocolName, SyncStateDoc
from sync_svc.store.ledger import DUPLICATE_KEY
from sync_svc.store.revision import Revision

STATE = "state"


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


class StateStore:
    def __init__(self, db: AsyncDatabase[Document], revision: Revision) -> None:
        self.collection = db[STATE]
        self._revision = revision
        # Every mailbox task's state reads and writes, sent together (sync_svc.batched).
        self._state_reads: Batcher[str, SyncStateDoc] = Batcher(self._read_states)
        self._state_writes: Batcher[StateWrite, None] = Batcher(self._write_states)

    async def get_state(self, mailbox_id: str) -> SyncStateDoc:
        """The mailbox's state (read in one ``$in`` with other mailboxes')."""
        return await self._state_reads(mailbox_id)

    async def _read_states(self, mailbox_ids: Sequence[str]) -> list[SyncStateDoc]:
        found = await self.states(set(mailbox_ids))
        return [found.get(m) or SyncStateDoc(id=m) for m in mailbox_ids]

    async def states(self, mailbox_ids: Iterable[str]) -> dict[str, SyncStateDoc]:
        found = self.collection.find({"_id": {"$in": list(mailbox_ids)}})
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
            await self.collection.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            if exc.details.get("writeConcernErrors"):
                raise
            for error in exc.details.get("writeErrors", []):
                i = int(error["index"])
                if error.get("code") != DUPLICATE_KEY:
                    outcomes[i] = Failed(BulkWriteError({"writeErrors": [error]}))
                    continue
                try:
                    await self.collection.update_one({"_id": writes[i].mailbox_id}, updates[i], upsert=True)
                except Exception as again:
                    outcomes[i] = Failed(again)
        return outcomes

    async def control(self, mailbox_id: str, fields: Controls, unset: Iterable[str] = ()) -> SyncStateDoc:
        """A pause, resume or resync: stored, then every worker sees the revision move."""
        update: Document = {"$set": _stored(fields), "$inc": {"generation": 1}}
        if unset:
            update["$unset"] = dict.fromkeys(unset, "")
        doc = await self.collection.find_one_and_update(
            {"_id": mailbox_id}, update, upsert=True, return_document=ReturnDocument.AFTER
        )
        await self._revision.bump()
        return SyncStateDoc(id=mailbox_id) if doc is None else SyncStateDoc.model_validate(doc)
