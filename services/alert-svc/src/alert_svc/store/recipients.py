"""Each recipient's notification preferences and the queue of alert mails waiting for a digest."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from alert_svc.store.alerts import AlertText
from alert_svc.store.queued import Queued
from contracts.events import AlertLevel
from mailwarden_runtime.documents import Stored, fields
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.outbox import OutboxEntry, with_outbox


class PreferencesDoc(Stored):
    """One recipient's choice (``_id`` ``<kind>:<id>``): which levels are mailed, and where."""

    email_levels: list[AlertLevel] | None = None
    """``None``: the service's default levels."""
    email: str | None = None
    """``None``: the owner's address from the alert."""
    updated_by: str = ""
    """Who set them last (``token:<sub>`` / ``jwt:<sub>``)."""


class EmailItem(Queued, AlertText):
    """One new alert waiting to be mailed in its recipient's next digest (``_id`` from the event)."""

    recipient_key: str
    address: str
    recipient_name: str
    alert_id: str
    test_id: str | None = None
    urgent: bool = False
    """Mailed at once (a majority failure whose profile asks for it), not in the next digest."""
    due_at: datetime
    state: Literal["pending", "sent"] = "pending"
    batch_id: str | None = None
    sent_at: datetime | None = None


class EmailRecipient(Stored):
    """Only a queued mail's recipient: what the digest worker looks for."""

    recipient_key: str


PREFERENCES = "recipient_preferences"


class PreferenceStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.prefs: AsyncCollection[Document] = db[PREFERENCES]

    async def preferences(self, key: str) -> PreferencesDoc | None:
        found = await self.prefs.find_one({"_id": key})
        return None if found is None else PreferencesDoc.model_validate(found)

    async def save_preferences(
        self, prefs: PreferencesDoc, events: Sequence[OutboxEntry] = ()
    ) -> PreferencesDoc:
        """``events`` (outbox entries: AlertPreferencesChanged) are written by the same update."""
        await self.prefs.update_one(
            {"_id": prefs.id},
            with_outbox({"$set": prefs.stored(include={"email_levels", "email", "updated_by"})}, events),
            upsert=True,
        )
        return await self.preferences(prefs.id) or prefs


class EmailQueue:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.emails: AsyncCollection[Document] = db["email_queue"]

    async def ensure_indexes(self) -> None:
        await self.emails.create_index([("state", ASCENDING), ("due_at", ASCENDING)])
        await self.emails.create_index("recipient_key")
        await self.emails.create_index("batch_id")

    async def enqueue_email(self, item: EmailItem) -> None:
        """Deterministic ``_id``: the same alert event never queues two mails."""
        try:
            await self.emails.insert_one(item.stored())
        except DuplicateKeyError:
            pass

    async def due_email_recipients(self, now: datetime) -> list[str]:
        docs = await self.emails.find(
            {"state": "pending", "due_at": {"$lte": now}, "lease_until": {"$lte": now}}, {"recipient_key": 1}
        ).to_list(None)
        return sorted({EmailRecipient.model_validate(d).recipient_key for d in docs})

    async def claim_emails(
        self, key: str, now: datetime, lease_s: float, limit: int
    ) -> tuple[str, list[EmailItem]]:
        """Lease a recipient's pending items to one batch; an expired lease frees them after a crash."""
        free = {"recipient_key": key, "state": "pending", "lease_until": {"$lte": now}}
        ids = [
            Stored.model_validate(d).id
            for d in await self.emails.find(free, {"_id": 1})
            .sort("created_at", ASCENDING)
            .limit(limit)
            .to_list(None)
        ]
        batch_id = str(uuid.uuid4())
        await self.emails.update_many(
            {**free, "_id": {"$in": ids}},
            {"$set": fields(EmailItem, batch_id=batch_id, lease_until=now + timedelta(seconds=lease_s))},
        )
        items = await self.emails.find({"batch_id": batch_id}).sort("created_at", ASCENDING).to_list(None)
        return batch_id, [EmailItem.model_validate(i) for i in items]

    async def emails_sent(self, batch_id: str, at: datetime) -> None:
        await self.emails.update_many(
            {"batch_id": batch_id}, {"$set": fields(EmailItem, state="sent", sent_at=at)}
        )

    async def emails_failed(self, batch_id: str, retry_at: datetime, error: str) -> None:
        await self.emails.update_many(
            {"batch_id": batch_id, "state": "pending"},
            {
                "$set": fields(EmailItem, due_at=retry_at, lease_until=retry_at, last_error=error),
                "$inc": {"attempts": 1},
            },
        )
