"""Registered webhooks and their deliveries (a queue with leases, retries and a history each)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from alert_svc.store.queued import Queued
from contracts.events import AlertLevel
from contracts.models import OwnerKind, SealedSecret
from mailwarden_runtime.documents import Stored, fields
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.outbox import OutboxEntry, new_document_outbox, with_outbox

KEEP_ATTEMPTS = 20
WEBHOOKS = "webhooks"
LIVE: Document = {"deleted": {"$ne": True}}
"""Webhooks not deleted (a deleted one is kept, with who deleted it, for the audit)."""


class WebhookDoc(Stored):
    """A registered URL; the signing secret only sealed (``webhook:<id>``)."""

    url: str
    recipient_kind: OwnerKind | None = None
    recipient_id: str | None = None
    scope_key: str
    """``<kind>:<id>`` of the recipient whose alerts it gets, ``*`` for every alert."""
    levels: list[AlertLevel] = Field(default_factory=list)
    secret: SealedSecret
    created_at: datetime
    created_by: str = ""
    """Who registered it (``token:<sub>`` / ``jwt:<sub>``): the audit of where alerts go."""
    deleted: bool = False
    deleted_by: str | None = None
    deleted_at: datetime | None = None


class Attempt(BaseModel):
    at: datetime
    status: int | None
    error: str | None
    duration_ms: float


class DeliveryDoc(Queued):
    """One alert event for one webhook: pending until delivered or given up, every attempt kept."""

    webhook_id: str
    event_id: str
    alert_id: str
    body: str = ""
    """The AlertRaised envelope as sent (left out of listings)."""
    state: Literal["pending", "delivered", "failed"] = "pending"
    next_attempt_at: datetime
    history: list[Attempt] = Field(default_factory=list)
    last_status: int | None = None
    last_attempt_at: datetime | None = None
    delivered_at: datetime | None = None


class WebhookStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.webhooks: AsyncCollection[Document] = db[WEBHOOKS]
        self.deliveries: AsyncCollection[Document] = db["webhook_deliveries"]

    async def ensure_indexes(self) -> None:
        await self.webhooks.create_index("scope_key")
        await self.deliveries.create_index([("state", ASCENDING), ("next_attempt_at", ASCENDING)])
        await self.deliveries.create_index([("webhook_id", ASCENDING), ("created_at", DESCENDING)])

    async def create_webhook(self, hook: WebhookDoc, events: Sequence[OutboxEntry] = ()) -> None:
        """Inserted with ``events`` (outbox entries: WebhookRegistered) in the same write."""
        await self.webhooks.insert_one(hook.stored() | new_document_outbox(events))

    async def list_webhooks(self) -> list[WebhookDoc]:
        found = await self.webhooks.find(LIVE, {"outbox": 0}).sort("created_at", ASCENDING).to_list(None)
        return [WebhookDoc.model_validate(d) for d in found]

    async def get_webhook(self, webhook_id: str) -> WebhookDoc | None:
        found = await self.webhooks.find_one({"_id": webhook_id, **LIVE}, {"outbox": 0})
        return None if found is None else WebhookDoc.model_validate(found)

    async def delete_webhook(self, webhook_id: str, actor: str, events: Sequence[OutboxEntry] = ()) -> bool:
        """Kept as deleted (by whom, when) with ``events`` (WebhookRemoved) in the same write: no
        delivery reaches it any more, and the audit keeps who removed it."""
        update = with_outbox(
            {"$set": fields(WebhookDoc, deleted=True, deleted_by=actor, deleted_at=datetime.now(UTC))}, events
        )
        result = await self.webhooks.update_one({"_id": webhook_id, **LIVE}, update)
        return result.modified_count == 1

    async def webhooks_for(self, key: str) -> list[WebhookDoc]:
        return (await self.webhooks_for_many([key]))[key]

    async def webhooks_for_many(self, keys: Sequence[str]) -> dict[str, list[WebhookDoc]]:
        """The webhooks of each recipient key (their own and the catch-all ``*``), in one read."""
        query = {"scope_key": {"$in": ["*", *keys]}, **LIVE}
        found = await self.webhooks.find(query, {"outbox": 0}).to_list(None)
        hooks = [WebhookDoc.model_validate(d) for d in found]
        return {key: [h for h in hooks if h.scope_key in ("*", key)] for key in keys}

    async def enqueue_delivery(self, delivery: DeliveryDoc) -> None:
        """Deterministic ``_id``: the same alert event never queues two deliveries to one webhook."""
        try:
            await self.deliveries.insert_one(delivery.stored())
        except DuplicateKeyError:
            pass

    async def due_deliveries(self, now: datetime, limit: int) -> list[DeliveryDoc]:
        query = {"state": "pending", "next_attempt_at": {"$lte": now}, "lease_until": {"$lte": now}}
        found = (
            await self.deliveries.find(query).sort("next_attempt_at", ASCENDING).limit(limit).to_list(None)
        )
        return [DeliveryDoc.model_validate(d) for d in found]

    async def lease_delivery(self, delivery: DeliveryDoc, until: datetime) -> datetime | None:
        """Take a due delivery for one attempt, unless another worker took it since it was read.

        Returns the lease (what :meth:`delivery_attempt` must present), None when not taken.
        """
        lease = until.replace(microsecond=until.microsecond // 1000 * 1000)  # as the database keeps it
        result = await self.deliveries.update_one(
            {
                "_id": delivery.id,
                "state": "pending",
                "attempts": delivery.attempts,
                "lease_until": delivery.lease_until,
            },
            {"$set": fields(DeliveryDoc, lease_until=lease)},
        )
        return lease if result.modified_count == 1 else None

    async def delivery_attempt(
        self, delivery: DeliveryDoc, lease: datetime, changes: Document, attempt: Attempt
    ) -> bool:
        """Record an attempt (``changes``: :func:`~mailwarden_runtime.documents.fields` of
        :class:`DeliveryDoc`), only while holding the lease it was made under.

        A worker whose lease ran out (and was taken by another) records nothing: one attempt, one
        history entry, one count, whoever finishes first.
        """
        result = await self.deliveries.update_one(
            {"_id": delivery.id, "state": "pending", "attempts": delivery.attempts, "lease_until": lease},
            {
                "$set": changes,
                "$inc": {"attempts": 1},
                "$push": {"history": {"$each": [attempt.model_dump()], "$slice": -KEEP_ATTEMPTS}},
            },
        )
        return result.modified_count == 1

    async def list_deliveries(self, webhook_id: str, state: str | None, limit: int) -> list[DeliveryDoc]:
        query = {"webhook_id": webhook_id} | ({"state": state} if state else {})
        cursor = self.deliveries.find(query, {"body": 0})
        found = await cursor.sort("created_at", DESCENDING).limit(limit).to_list(None)
        return [DeliveryDoc.model_validate(d) for d in found]
