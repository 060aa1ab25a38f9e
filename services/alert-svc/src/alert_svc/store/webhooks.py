"""Registered webhooks and their deliveries (a queue with leases, retries and a history each)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from alert_svc.store.recipients import EPOCH
from mailwarden_runtime.mongo import Document

KEEP_ATTEMPTS = 20


class WebhookStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.webhooks: AsyncCollection[Document] = db["webhooks"]
        self.deliveries: AsyncCollection[Document] = db["webhook_deliveries"]

    async def ensure_indexes(self) -> None:
        await self.webhooks.create_index("scope_key")
        await self.deliveries.create_index([("state", ASCENDING), ("next_attempt_at", ASCENDING)])
        await self.deliveries.create_index([("webhook_id", ASCENDING), ("created_at", DESCENDING)])

    async def create_webhook(self, doc: Document) -> None:
        await self.webhooks.insert_one(doc)

    async def list_webhooks(self) -> list[Document]:
        return await self.webhooks.find({}).sort("created_at", ASCENDING).to_list(None)

    async def get_webhook(self, webhook_id: str) -> Document | None:
        return await self.webhooks.find_one({"_id": webhook_id})

    async def delete_webhook(self, webhook_id: str) -> bool:
        return (await self.webhooks.delete_one({"_id": webhook_id})).deleted_count == 1

    async def webhooks_for(self, key: str) -> list[Document]:
        return await self.webhooks.find({"scope_key": {"$in": ["*", key]}}).to_list(None)

    async def enqueue_delivery(self, doc: Document) -> None:
        try:
            await self.deliveries.insert_one(
                doc | {"state": "pending", "attempts": 0, "lease_until": EPOCH, "history": []}
            )
        except DuplicateKeyError:
            pass

    async def due_deliveries(self, now: datetime, limit: int) -> list[Document]:
        query = {"state": "pending", "next_attempt_at": {"$lte": now}, "lease_until": {"$lte": now}}
        return await self.deliveries.find(query).sort("next_attempt_at", ASCENDING).limit(limit).to_list(None)

    async def lease_delivery(self, doc: Document, until: datetime) -> bool:
        result = await self.deliveries.update_one(
            {
                "_id": doc["_id"],
                "state": "pending",
                "attempts": doc["attempts"],
                "lease_until": doc["lease_until"],
            },
            {"$set": {"lease_until": until}},
        )
        return result.modified_count == 1

    async def delivery_attempt(self, delivery_id: str, changes: Document, attempt: Document) -> None:
        await self.deliveries.update_one(
            {"_id": delivery_id},
            {
                "$set": changes,
                "$inc": {"attempts": 1},
                "$push": {"history": {"$each": [attempt], "$slice": -KEEP_ATTEMPTS}},
            },
        )

    async def list_deliveries(self, webhook_id: str, state: str | None, limit: int) -> list[Document]:
        query: dict[str, Any] = {"webhook_id": webhook_id}
        if state:
            query["state"] = state
        cursor = self.deliveries.find(query, {"body": 0})
        return await cursor.sort("created_at", DESCENDING).limit(limit).to_list(None)
