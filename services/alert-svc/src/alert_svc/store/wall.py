"""The wall: which alerts a listing, a deletion or a resolution takes (typed filters, turned into
queries here), and what people do on their wall (list, read, mark read, delete)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pymongo import DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from alert_svc.store.alerts import ALERTS, AlertDoc
from alert_svc.store.occurrences import Occurrences
from contracts.events import AlertLevel
from mailwarden_runtime.documents import fields
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.outbox import OutboxEntry, with_outbox


@dataclass(frozen=True)
class WallFilter:
    """Alerts on the wall (not deleted); every field left None matches all."""

    alert_id: str | None = None
    recipient_key: str | None = None
    """``<kind>:<id>``: one recipient's wall."""
    level: AlertLevel | None = None
    state: Literal["open", "resolved"] | None = None
    mailbox_id: str | None = None
    profile_id: str | None = None
    read: bool | None = None
    after: tuple[datetime, str] | None = None
    """The (``first_seen``, id) of the last alert of the previous page: the wall is newest first."""

    def query(self) -> Document:
        query: Document = {"deleted": False}
        for name in ("recipient_key", "level", "state", "mailbox_id", "profile_id", "read"):
            value = getattr(self, name)
            if value is not None:
                query[name] = value
        if self.alert_id is not None:
            query["_id"] = self.alert_id
        if self.after is not None:
            at, last_id = self.after
            query["$or"] = [{"first_seen": {"$lt": at}}, {"first_seen": at, "_id": {"$lt": last_id}}]
        return query


@dataclass(frozen=True)
class OpenFilter:
    """Open alerts a resolution takes (``AlertStore.resolve``); every field left None matches all."""

    alert_id: str | None = None
    kind: str | None = None
    mailbox_id: str | None = None
    code: str | None = None
    occurrence: str | None = None
    """An occurrence the alert counted (e.g. a sync episode's tag)."""
    emptied: bool = False
    """Only a group alert whose affected mailboxes all left."""

    def query(self) -> Document:
        # "kind" before the others: see the (kind, profile_id) index in AlertStore.ensure_indexes.
        query: Document = {} if self.alert_id is None else {"_id": self.alert_id}
        for name in ("kind", "mailbox_id", "code"):
            value = getattr(self, name)
            if value is not None:
                query[name] = value
        if self.occurrence is not None:
            query["occurrences"] = self.occurrence
        if self.emptied:
            query["affected_mailboxes"] = {"$size": 0}
        return query | {"state": "open"}


class Wall:
    """The alerts as their recipients see them: each read with its occurrences' tail counted in."""

    def __init__(self, db: AsyncDatabase[Document], occurrences: Occurrences) -> None:
        self.alerts: AsyncCollection[Document] = db[ALERTS]
        self.occurrences = occurrences

    async def find_alerts(self, which: WallFilter, limit: int) -> list[AlertDoc]:
        cursor = self.alerts.find(which.query(), {"outbox": 0, "occurrences": 0})
        found = (
            await cursor.sort([("first_seen", DESCENDING), ("_id", DESCENDING)]).limit(limit).to_list(None)
        )
        return await self.occurrences.with_tails([AlertDoc.model_validate(d) for d in found])

    async def get_alert(self, alert_id: str) -> AlertDoc | None:
        found = await self.alerts.find_one(
            {"_id": alert_id, "deleted": False}, {"outbox": 0, "occurrences": 0}
        )
        if found is None:
            return None
        return (await self.occurrences.with_tails([AlertDoc.model_validate(found)]))[0]

    async def mark_read(
        self, alert_id: str, read: bool, actor: str = "", events: Sequence[OutboxEntry] = ()
    ) -> AlertDoc | None:
        """``events`` (outbox entries, e.g. AlertMarkedRead) are written by the same update."""
        update = with_outbox({"$set": fields(AlertDoc, read=read, read_by=actor)}, events)
        await self.alerts.update_one({"_id": alert_id, "deleted": False}, update)
        return await self.get_alert(alert_id)

    async def delete_alerts(
        self, which: WallFilter, actor: str = "", events: Sequence[OutboxEntry] = ()
    ) -> int:
        """Soft delete: the alert leaves the wall, and its cause may open a fresh alert.

        ``events`` (the AlertsDeleted entry) go into every alert deleted, by the same update: one
        event id, so JetStream keeps one copy; none when nothing was deleted."""
        update = with_outbox(
            {"$set": fields(AlertDoc, deleted=True, deleted_by=actor), "$unset": {"open_key": ""}}, events
        )
        result = await self.alerts.update_many(which.query(), update)
        return result.modified_count
