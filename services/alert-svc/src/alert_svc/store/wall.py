"""Which alerts a listing, a deletion or a resolution takes: typed filters, turned into queries here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from contracts.events import AlertLevel
from mailwarden_runtime.mongo import Document


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
