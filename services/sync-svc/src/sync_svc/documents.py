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
    """One message seen in a mailbox (``id`` = the EmailReceived's event id), as a sync hands it to
    the ledger and as the ledger gives it back (with the consuming systems' answers).

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


class LedgerBatch(BaseModel):
    """``ledger``: the entries one sync stored together (a pipeline batch, ~100 messages), as
    parallel lists: one document and one ``m`` index entry per batch instead of per message
    (SecantusDB's cost is per document: 0.13 ms of its CPU per message as one document each,
    0.02-0.03 as batches; bench/README.md, session 6). ``ids`` is a multikey index: which event
    ids are known, and a feedback's message. A replayed batch may be stored again, whole or cut
    differently: every reader takes the union, so a second copy changes no answer."""

    m: str
    uv: int | None = None
    ids: list[str]
    fps: list[str | None]
    uids: list[int | None] | None = None
    uidls: list[str | None] | None = None
    baseline: list[str] | None = None
    """The ids of those seen but never published."""

    @classmethod
    def of(cls, entries: list[LedgerEntry]) -> dict[str, object]:
        """One mailbox's entries as stored (built by hand: once per batch on the sync path)."""
        first = entries[0]
        doc: dict[str, object] = {
            "m": first.m,
            "uv": first.uv,
            "ids": [e.id for e in entries],
            "fps": [e.fp for e in entries],
        }
        if any(e.uid is not None for e in entries):
            doc["uids"] = [e.uid for e in entries]
        if any(e.uidl is not None for e in entries):
            doc["uidls"] = [e.uidl for e in entries]
        if baseline := [e.id for e in entries if e.baseline]:
            doc["baseline"] = baseline
        return doc

    def entry(self, event_id: str) -> LedgerEntry | None:
        """The entry of ``event_id`` in this batch (no answers: they are kept in ``answers``)."""
        if event_id not in self.ids:
            return None
        i = self.ids.index(event_id)
        return LedgerEntry(
            id=event_id,
            m=self.m,
            fp=self.fps[i],
            uid=self.uids[i] if self.uids else None,
            uv=self.uv,
            uidl=self.uidls[i] if self.uidls else None,
            baseline=event_id in (self.baseline or ()),
        )


class Answers(Stored):
    """``answers``: what the consuming systems answered about one published message (``_id`` = its
    event id): the first EmailTracked and the first EmailRejected. Written only when an answer
    comes, so a sync's ledger batch is never updated per message."""

    m: str
    tracked: Feedback | None = None
    rejected: Feedback | None = None
