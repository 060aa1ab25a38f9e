"""The stored documents of sync-svc, typed: sync state per mailbox and the ledger of published messages."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from mailwarden_runtime.documents import Stored

SyncProtocolName = Literal["imap", "pop3"]
SyncMode = Literal["idle", "poll"]


class Episode(BaseModel):
    """An open error episode: one MailboxSyncFailed when it opens (or its code changes), one
    MailboxSyncRecovered when a sync goes through again."""

    id: str
    code: str
    failures: int
    first_failed_at: datetime


class SyncError(BaseModel):
    """The last failed sync (also shown as is by the sync state operation)."""

    code: str
    step: str
    detail: str
    at: datetime


class SyncStateDoc(Stored):
    """``state``: where one mailbox's sync stands (``_id`` = mailbox id), and its controls."""

    protocol: SyncProtocolName | None = None
    uidvalidity: int | None = None
    last_uid: int | None = None
    messages_seen: int = 0
    mode: SyncMode | None = None
    last_sync_at: datetime | None = None
    last_error: SyncError | None = None
    episode: Episode | None = None
    recovered_at: datetime | None = None
    paused: bool = False
    generation: int = 0
    """Moves with every control (pause, resume, resync): the worker restarts the mailbox's task."""
    resync_from: datetime | None = None
    controlled_by: str | None = None
    """Who asked for the last pause, resume or resync (``token:<sub>`` / ``jwt:<sub>``)."""
    controlled_at: datetime | None = None


class Feedback(BaseModel):
    """What a consuming system answered about one message (EmailTracked or EmailRejected)."""

    system: str
    note: str = ""
    """The record it became (tracked), or why it could not (rejected)."""
    at: datetime


class LedgerEntry(Stored):
    """``published``: one message seen in a mailbox (``_id`` = the EmailReceived's event id).

    ``fp`` (Message-ID, Date and size) recognises it after a UIDVALIDITY change or a move to another
    protocol; ``baseline`` marks a message seen but never published (older than the start date).
    """

    m: str
    fp: str | None = None
    uid: int | None = None
    uv: int | None = None
    uidl: str | None = None
    baseline: bool = False
    tracked: Feedback | None = None
    rejected: Feedback | None = None

    def inserted(self) -> dict[str, object]:
        """As first inserted (no answers yet): built by hand, once per message on the sync path."""
        return {
            "_id": self.id,
            "m": self.m,
            "fp": self.fp,
            "uid": self.uid,
            "uv": self.uv,
            "uidl": self.uidl,
            "baseline": self.baseline,
        }
