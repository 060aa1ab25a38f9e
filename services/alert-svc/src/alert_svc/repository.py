"""All of alert-svc's MongoDB access: alerts, read models, the channel queues and webhooks.

Every write that changes an alert carries its AlertRaised event in the same update (outbox), and
every write a redelivered event may repeat is conditional or keyed on a deterministic id.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from alert_svc.domain import Draft, recipient_key, stable_id
from alert_svc.rules import OrgPolicy
from contracts.envelope import make_envelope
from contracts.events import AlertRaised, SettingsSnapshot
from contracts.models import Owner
from contracts.subjects import alert_subject
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.outbox import new_document_outbox, outbox_entry, with_outbox

PRODUCER = "alert-svc"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
KEEP_OCCURRENCES = 20
ALERTS = "alerts"


class Contention(RuntimeError):
    """An alert changed under us too often; the handler is retried."""


def alert_event(doc: Document, occurrence: str) -> tuple[Document, str]:
    """The AlertRaised outbox entry for the state ``doc`` is about to have."""
    recipient = Owner.model_validate(doc["recipient"])
    data = AlertRaised(
        alert_id=doc["_id"],
        recipient=recipient,
        level=doc["level"],
        code=doc["code"],
        title=doc["title"],
        message=doc["message"],
        remediation=doc.get("remediation", ""),
        mailbox_id=doc.get("mailbox_id"),
        mailbox_email=doc.get("mailbox_email"),
        profile_id=doc.get("profile_id"),
        test_id=doc.get("last_test_id"),
        direction=doc.get("direction"),
        state=doc["state"],
        count=doc["count"],
        affected_mailboxes=list(doc.get("affected_mailboxes") or []),
        first_seen=doc["first_seen"],
        last_seen=doc["last_seen"],
    )
    event_id = uuid.UUID(stable_id("event", doc["_id"], occurrence))
    envelope = make_envelope(data, PRODUCER, event_id=event_id, correlation_id=doc.get("last_test_id"))
    subject = alert_subject(recipient.kind.value, recipient.id, doc["level"])
    return outbox_entry(envelope, subject), subject


class Repository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self.alerts: AsyncCollection[Document] = db[ALERTS]
        self.settings: AsyncCollection[Document] = db["org_settings"]
        self.profiles: AsyncCollection[Document] = db["profiles"]
        self.mailboxes: AsyncCollection[Document] = db["mailboxes"]
        self.failures: AsyncCollection[Document] = db["mailbox_failures"]
        self.prefs: AsyncCollection[Document] = db["recipient_preferences"]
        self.emails: AsyncCollection[Document] = db["email_queue"]
        self.webhooks: AsyncCollection[Document] = db["webhooks"]
        self.deliveries: AsyncCollection[Document] = db["webhook_deliveries"]

    async def ensure_indexes(self) -> None:
        a = self.alerts
        await a.create_index("open_key", unique=True, sparse=True)
        await a.create_index([("recipient_key", ASCENDING), ("first_seen", DESCENDING)])
        await a.create_index("mailbox_id")
        await a.create_index("profile_id")
        # Profile-level alerts (group, warning, majority) are looked up on every status event.
        # Queries name "kind" first: a planner that takes the first field's index (the embedded
        # Mongo-wire server does) then reads the few profile-level alerts, not every mailbox alert
        # of the profile (O(N) per event, O(N^2) per job).
        await a.create_index([("kind", ASCENDING), ("profile_id", ASCENDING)])
        await self.mailboxes.create_index("profile_id")
        await self.failures.create_index([("profile_id", ASCENDING), ("failing", ASCENDING)])
        await self.emails.create_index([("state", ASCENDING), ("due_at", ASCENDING)])
        await self.emails.create_index("recipient_key")
        await self.emails.create_index("batch_id")
        await self.webhooks.create_index("scope_key")
        await self.deliveries.create_index([("state", ASCENDING), ("next_attempt_at", ASCENDING)])
        await self.deliveries.create_index([("webhook_id", ASCENDING), ("created_at", DESCENDING)])

    # --- read models ------------------------------------------------------------------------
    async def policy(self) -> OrgPolicy:
        doc = await self.settings.find_one({"_id": "org"})
        if doc is None:
            return OrgPolicy()
        return OrgPolicy(frozenset(doc["alert_levels"]), bool(doc["notify_mailbox_owner"]))

    async def save_settings(self, snap: SettingsSnapshot) -> None:
        """Keep the newest settings; an older version arriving late changes nothing."""
        fields = {"alert_levels": list(snap.alert_levels), "notify_mailbox_owner": snap.notify_mailbox_owner}
        await self._versioned_upsert(self.settings, "org", snap.version, fields)

    async def save_profile(self, profile_id: str, version: int, fields: Document) -> None:
        await self._versioned_upsert(self.profiles, profile_id, version, fields)

    async def delete_profile(self, profile_id: str) -> None:
        # A tombstone with the highest version: a late Created/Updated cannot bring it back.
        await self.profiles.update_one(
            {"_id": profile_id}, {"$set": {"deleted": True, "version": 2**62}}, upsert=True
        )

    async def profile(self, profile_id: str) -> Document | None:
        return await self.profiles.find_one({"_id": profile_id, "deleted": {"$ne": True}})

    async def save_mailbox(self, mailbox_id: str, version: int, profile_id: str | None, active: bool) -> None:
        await self._versioned_upsert(
            self.mailboxes, mailbox_id, version, {"profile_id": profile_id, "active": active}
        )

    async def note_mailbox(self, mailbox_id: str, profile_id: str) -> None:
        """A mailbox seen in a status event counts for its profile even if its creation was missed."""
        await self.mailboxes.update_one(
            {"_id": mailbox_id},
            {"$setOnInsert": {"profile_id": profile_id, "active": True, "version": 0}},
            upsert=True,
        )

    async def profile_mailbox_count(self, profile_id: str) -> int:
        return await self.mailboxes.count_documents({"profile_id": profile_id, "active": True})

    async def _versioned_upsert(
        self, coll: AsyncCollection[Document], _id: str, version: int, fields: Document
    ) -> None:
        try:
            await coll.update_one(
                {"_id": _id, "version": {"$lte": version}},
                {"$set": {**fields, "version": version}},
                upsert=True,
            )
        except DuplicateKeyError:
            pass  # a newer version is stored already

    # --- failure tracking (grouping and the majority alert) -----------------------------------
    async def record_direction(
        self, mailbox_id: str, email: str, profile_id: str, direction: str, code: str | None, at: datetime
    ) -> None:
        """The latest outcome of one direction of one mailbox (``code`` None: it works)."""
        fields: Document = {
            "profile_id": profile_id,
            "mailbox_id": mailbox_id,
            "email": email,
            "direction": direction,
            "failing": code is not None,
            "at": at,
        }
        if code is not None:
            fields |= {"code": code, "failed_at": at}
        try:
            await self.failures.update_one(
                {"_id": f"{mailbox_id}|{direction}", "at": {"$lte": at}}, {"$set": fields}, upsert=True
            )
        except DuplicateKeyError:
            pass  # a newer outcome is stored already

    async def failing_mailboxes(
        self, profile_id: str, direction: str, code: str, since: datetime
    ) -> list[tuple[str, str]]:
        docs = await self.failures.find(
            {
                "profile_id": profile_id,
                "failing": True,
                "direction": direction,
                "code": code,
                "failed_at": {"$gte": since},
            }
        ).to_list(None)
        return sorted((d["mailbox_id"], d["email"]) for d in docs)

    async def failed_mailbox_count(self, profile_id: str, since: datetime) -> int:
        docs = await self.failures.find(
            {"profile_id": profile_id, "failing": True, "failed_at": {"$gte": since}}, {"mailbox_id": 1}
        ).to_list(None)
        return len({d["mailbox_id"] for d in docs})

    # --- alerts ---------------------------------------------------------------------------------
    async def raise_alert(self, draft: Draft, occurrence: str, test_id: str | None, at: datetime) -> str:
        """Open the draft's alert, or count one more occurrence on the open one.

        Returns "new", "repeat" or "duplicate" (this occurrence was recorded before).
        """
        content: Document = {
            "level": draft.level,
            "kind": draft.kind,
            "code": draft.code,
            "title": draft.title,
            "message": draft.message,
            "remediation": draft.remediation,
        }
        for _ in range(8):
            current = await self.alerts.find_one({"open_key": draft.key}, {"outbox": 0})
            if current is None:
                doc: Document = {
                    "_id": draft.alert_id(occurrence),
                    "open_key": draft.key,
                    "key": draft.key,
                    "recipient": draft.recipient.model_dump(mode="json"),
                    "recipient_key": recipient_key(draft.recipient),
                    **content,
                    "mailbox_id": draft.mailbox_id,
                    "mailbox_email": draft.mailbox_email,
                    "profile_id": draft.profile_id,
                    "direction": draft.direction.value if draft.direction else None,
                    "affected_mailboxes": sorted(draft.affected),
                    "state": "open",
                    "count": 1,
                    "first_seen": at,
                    "last_seen": at,
                    "test_id": test_id,
                    "last_test_id": test_id,
                    "occurrences": [occurrence],
                    "read": False,
                    "deleted": False,
                }
                entry, _ = alert_event(doc, occurrence)
                try:
                    await self.alerts.insert_one(doc | new_document_outbox([entry]))
                except DuplicateKeyError as exc:
                    if "_id" in ((exc.details or {}).get("keyValue") or {}):
                        return "duplicate"
                    continue  # another writer opened it first: count on theirs
                return "new"
            if occurrence in current.get("occurrences", []):
                return "duplicate"
            affected = set(draft.affected)
            if draft.add_affected:
                affected |= set(current.get("affected_mailboxes") or [])
            changes: Document = content | {
                "count": current["count"] + 1,
                "last_seen": max(at, current["last_seen"]),
                "last_test_id": test_id,
                "affected_mailboxes": sorted(affected),
            }
            entry, _ = alert_event(current | changes, occurrence)
            result = await self.alerts.update_one(
                {"_id": current["_id"], "open_key": draft.key, "count": current["count"]},
                with_outbox(
                    {
                        "$set": changes,
                        "$push": {"occurrences": {"$each": [occurrence], "$slice": -KEEP_OCCURRENCES}},
                    },
                    [entry],
                ),
            )
            if result.modified_count:
                return "repeat"
        raise Contention(f"alert {draft.key} kept changing")

    async def resolve(self, query: Document, reason: str, at: datetime) -> int:
        """Resolve every open alert matching ``query``; each publishes its resolved state."""
        done = 0
        for doc in await self.alerts.find({**query, "state": "open"}, {"outbox": 0}).to_list(None):
            changes = {"state": "resolved", "resolved_at": at, "resolved_reason": reason}
            entry, _ = alert_event(doc | changes, "resolved")
            result = await self.alerts.update_one(
                {"_id": doc["_id"], "state": "open"},
                with_outbox({"$set": changes, "$unset": {"open_key": ""}}, [entry]),
            )
            done += result.modified_count
        return done

    async def detach_mailbox(self, profile_id: str, direction: str, mailbox_id: str) -> None:
        """A recovered mailbox leaves the profile's group alerts (no event: the group still stands)."""
        await self.alerts.update_many(
            {
                "kind": "group",  # first: the (kind, profile_id) index
                "profile_id": profile_id,
                "direction": direction,
                "state": "open",
                "affected_mailboxes": mailbox_id,
            },
            {"$pull": {"affected_mailboxes": mailbox_id}},
        )

    async def open_alerts(self, query: Document) -> list[Document]:
        return await self.alerts.find({**query, "state": "open"}, {"outbox": 0}).to_list(None)

    async def find_alerts(self, query: Document, limit: int) -> list[Document]:
        cursor = self.alerts.find({**query, "deleted": False}, {"outbox": 0, "occurrences": 0})
        return await cursor.sort([("first_seen", DESCENDING), ("_id", DESCENDING)]).limit(limit).to_list(None)

    async def get_alert(self, alert_id: str) -> Document | None:
        return await self.alerts.find_one(
            {"_id": alert_id, "deleted": False}, {"outbox": 0, "occurrences": 0}
        )

    async def mark_read(self, alert_id: str, read: bool) -> Document | None:
        await self.alerts.update_one({"_id": alert_id, "deleted": False}, {"$set": {"read": read}})
        return await self.get_alert(alert_id)

    async def delete_alerts(self, query: Document) -> int:
        """Soft delete: the alert leaves the wall, and its cause may open a fresh alert."""
        result = await self.alerts.update_many(
            {**query, "deleted": False}, {"$set": {"deleted": True}, "$unset": {"open_key": ""}}
        )
        return result.modified_count

    # --- recipient preferences -------------------------------------------------------------------
    async def preferences(self, key: str) -> Document | None:
        return await self.prefs.find_one({"_id": key})

    async def save_preferences(self, key: str, fields: Document) -> Document:
        await self.prefs.update_one({"_id": key}, {"$set": fields}, upsert=True)
        return await self.prefs.find_one({"_id": key}) or {}

    # --- email queue -----------------------------------------------------------------------------
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

    # --- webhooks --------------------------------------------------------------------------------
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
                "$push": {"history": {"$each": [attempt], "$slice": -KEEP_OCCURRENCES}},
            },
        )

    async def list_deliveries(self, webhook_id: str, state: str | None, limit: int) -> list[Document]:
        query: dict[str, Any] = {"webhook_id": webhook_id}
        if state:
            query["state"] = state
        cursor = self.deliveries.find(query, {"body": 0})
        return await cursor.sort("created_at", DESCENDING).limit(limit).to_list(None)
