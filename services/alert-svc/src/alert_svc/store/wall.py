"""Which alerts of the wall a listing or a deletion takes: a typed filter, turned into the query here."""

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
