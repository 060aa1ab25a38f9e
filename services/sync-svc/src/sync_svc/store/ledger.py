"""The ledger of published messages (``ledger``): one document per batch a mailbox published
(:class:`~sync_svc.documents.LedgerBatch`): their event ids, and fingerprints of Message-ID, Date
and size, so a UIDVALIDITY change or a move to another protocol re-baselines without publishing
anything twice. Every mailbox task's inserts and lookups go out together (:mod:`sync_svc.batched`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import BaseModel
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from mailwarden_runtime.mongo import Document
from sync_svc.batched import Batcher, Failed
from sync_svc.documents import LedgerBatch, LedgerEntry

LEDGER = "ledger"
DUPLICATE_KEY = 11000


class _Ids(BaseModel):
    """A batch's event ids (a projection of :class:`LedgerBatch`)."""

    ids: list[str]


class _Fingerprints(BaseModel):
    """A batch's fingerprints (a projection of :class:`LedgerBatch`)."""

    fps: list[str | None]


class LedgerStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.collection = db[LEDGER]
        # Every mailbox task's ledger calls, sent together (sync_svc.batched).
        self._ledger_writes: Batcher[list[LedgerEntry], None] = Batcher(self._insert_ledger)
        self._ledger_reads: Batcher[list[str], set[str]] = Batcher(self._known_ids)
        self._ledger_owners: Batcher[str, bool] = Batcher(self._have_ledgers)

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("ids", ASCENDING)])
        await self.collection.create_index([("m", ASCENDING)])

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
            await self.collection.insert_many([LedgerBatch.of(batch) for batch in batches], ordered=False)
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
        found = set(await self.collection.distinct("m", {"m": {"$in": list(mailbox_ids)}}))
        return [m in found for m in mailbox_ids]

    async def known_ids(self, ids: Iterable[str]) -> set[str]:
        """Which of these event ids the ledger has (in one ``$in`` with other mailboxes' lookups)."""
        wanted = list(ids)
        return await self._ledger_reads(wanted) if wanted else set()

    async def _known_ids(self, lookups: Sequence[list[str]]) -> list[set[str]]:
        wanted = [i for ids in lookups for i in ids]
        found: set[str] = set()
        async for d in self.collection.find({"ids": {"$in": wanted}}, {"ids": 1, "_id": 0}):
            found.update(_Ids.model_validate(d).ids)
        return [found.intersection(ids) for ids in lookups]

    async def known_fingerprints(self, mailbox_id: str, fps: Iterable[str]) -> set[str]:
        """Which of these fingerprints the mailbox's ledger has (re-baselining only: the mailbox's
        batches are read by its ``m`` index, not a per-message index every insert would pay for)."""
        wanted = set(fps)
        if not wanted:
            return set()
        found: set[str] = set()
        cursor = self.collection.find({"m": mailbox_id, "fps": {"$in": list(wanted)}}, {"fps": 1, "_id": 0})
        async for d in cursor:
            found.update(f for f in _Fingerprints.model_validate(d).fps if f in wanted)
        return found

    async def has_entry(self, email_id: str, mailbox_id: str) -> bool:
        """Whether the mailbox published this message."""
        return await self.collection.find_one({"ids": email_id, "m": mailbox_id}, {"_id": 1}) is not None

    async def entry(self, email_id: str, mailbox_id: str) -> LedgerEntry | None:
        """The message as the mailbox's ledger has it (without the answers about it)."""
        doc = await self.collection.find_one({"ids": email_id, "m": mailbox_id})
        return None if doc is None else LedgerBatch.model_validate(doc).entry(email_id)
