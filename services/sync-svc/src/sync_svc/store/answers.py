"""What the consuming systems answered about a published message (``answers``, one
:class:`~sync_svc.documents.Answers` document per message, :mod:`sync_svc.feedback`): the first
answer of each kind is kept, for messages the mailbox's ledger has."""

from __future__ import annotations

from typing import Literal

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from mailwarden_runtime.mongo import Document
from sync_svc.documents import Answers, Feedback, LedgerEntry
from sync_svc.store.ledger import LedgerStore

ANSWERS = "answers"


class AnswerStore:
    def __init__(self, db: AsyncDatabase[Document], ledger: LedgerStore) -> None:
        self.collection = db[ANSWERS]
        self._ledger = ledger

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("m", ASCENDING)])

    async def mark_feedback(
        self, email_id: str, mailbox_id: str, kind: Literal["tracked", "rejected"], answer: Feedback
    ) -> bool:
        """Keep a consuming system's first answer of ``kind`` on a published message; False when the
        message was not published here or already had one."""
        if not await self._ledger.has_entry(email_id, mailbox_id):
            return False
        try:
            res = await self.collection.update_one(
                {"_id": email_id, kind: None},
                {"$set": {kind: answer.model_dump()}, "$setOnInsert": {"m": mailbox_id}},
                upsert=True,
            )
        except DuplicateKeyError:  # the answers exist and already have one of this kind
            return False
        return res.modified_count == 1 or res.upserted_id is not None

    async def ledger_entry(self, email_id: str, mailbox_id: str) -> LedgerEntry | None:
        """The published message with the answers about it."""
        entry = await self._ledger.entry(email_id, mailbox_id)
        if entry is None:
            return None
        if (answered := await self.collection.find_one({"_id": email_id})) is not None:
            answers = Answers.model_validate(answered)
            entry = entry.model_copy(update={"tracked": answers.tracked, "rejected": answers.rejected})
        return entry

    async def feedback_counts(self, mailbox_id: str) -> tuple[int, int]:
        """How many of the mailbox's messages were tracked, and how many rejected (one answers
        document per message: exact however often an answer was delivered)."""
        tracked = await self.collection.count_documents({"m": mailbox_id, "tracked": {"$ne": None}})
        rejected = await self.collection.count_documents({"m": mailbox_id, "rejected": {"$ne": None}})
        return tracked, rejected
