"""Each recipient's notification preferences and the queue of alert mails waiting for a digest."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from mailwarden_runtime.mongo import Document

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class PreferenceStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.prefs: AsyncCollection[Document] = db["recipient_preferences"]

    async def preferences(self, key: str) -> Document | None:
        return await self.prefs.find_one({"_id": key})

    async def save_preferences(self, key: str, fields: Document) -> Document:
        await self.prefs.update_one({"_id": key}, {"$set": fields}, upsert=True)
        return await self.prefs.find_one({"_id": key}) or {}


class EmailQueue:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.emails: AsyncCollection[Document] = db["email_queue"]

    async def ensure_indexes(self) -> None:
        await self.emails.create_index([("state", ASCENDING), ("due_at", ASCENDING)])
        await self.emails.create_index("recipient_key")
        await self.emails.create_index("batch_id")

    async def enqueue_email(self, item: Document) -> None:
        """Deterministic ``_id``: the same alert event never queues two mails."""
        try:
            await self.emails.insert_one(item | {"state": "pending", "attempts": 0, "lease_until": EPOCH})
        except DuplicateKeyError:
            pass

    async def due_email_recipients(self, now: datetime) -> list[str]:
        docs = await self.emails.find(
            {"state": "pending", "due_at": {"$lte": now}, "lease_until": {"$lte": now}}, {"recipient_key": 1}
        ).to_list(None)
        return sorted({d["recipient_key"] for d in docs})

    async def claim_emails(
        self, key: str, now: datetime, lease_s: float, limit: int
    ) -> tuple[str, list[Document]]:
        """Lease a recipient's pending items to one batch; an expired lease frees them after a crash."""
        free = {"recipient_key": key, "state": "pending", "lease_until": {"$lte": now}}
        ids = [
            d["_id"]
            for d in await self.emails.find(free, {"_id": 1})
            .sort("created_at", ASCENDING)
            .limit(limit)
            .to_list(None)
        ]
        batch_id = str(uuid.uuid4())
        await self.emails.update_many(
            {**free, "_id": {"$in": ids}},
            {"$set": {"batch_id": batch_id, "lease_until": now + timedelta(seconds=lease_s)}},
        )
        items = await self.emails.find({"batch_id": batch_id}).sort("created_at", ASCENDING).to_list(None)
        return batch_id, items

    async def emails_sent(self, batch_id: str, at: datetime) -> None:
        await self.emails.update_many({"batch_id": batch_id}, {"$set": {"state": "sent", "sent_at": at}})

    async def emails_failed(self, batch_id: str, retry_at: datetime, error: str) -> None:
        await self.emails.update_many(
            {"batch_id": batch_id, "state": "pending"},
            {
                "$set": {"due_at": retry_at, "lease_until": retry_at, "last_error": error},
                "$inc": {"attempts": 1},
            },
        )
