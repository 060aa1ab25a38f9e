"""Sync state and controls of one mailbox: the same operations on HTTP and NATS request-reply.

Pause stops the mailbox's sync on whichever worker holds it (within one reconcile interval);
resume starts it again; resync from a date lists the INBOX since then and publishes only what
was never published (the ledger recognises the rest), then carries on incrementally.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.email import MailboxSyncPaused
from contracts.models import Identifier
from mailwarden_runtime.auth import require_mailbox
from mailwarden_runtime.http import DomainError
from mailwarden_runtime.mongo import Document
from sync_svc.repository import Repository


class MailboxRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mailbox_id: Identifier


class ResyncRequest(MailboxRequest):
    from_date: date = Field(description="Publish what arrived since this day and was never published.")


class SyncError(BaseModel):
    code: str
    step: str
    detail: str
    at: datetime


class SyncState(BaseModel):
    """Where one mailbox's sync stands. ``synced``: a worker is to sync it now (enabled, not paused)."""

    mailbox_id: str
    synced: bool
    paused: bool
    protocol: Literal["imap", "pop3"] | None = None
    mode: Literal["idle", "poll"] | None = None
    uidvalidity: int | None = None
    last_uid: int | None = None
    messages_seen: Annotated[int, Field(ge=0)] = 0
    last_sync_at: datetime | None = None
    last_error: SyncError | None = None
    failing_since: datetime | None = None
    resync_from: date | None = None


class Operations:
    def __init__(
        self,
        repo: Repository,
        targets: Callable[[], set[str]],
        wake: Callable[[], None],
        announce: Callable[[MailboxSyncPaused], Awaitable[None]],
    ) -> None:
        self.repo = repo
        self.targets = targets
        self.wake = wake
        self.announce = announce  # MailboxSyncPaused: mailbox-svc re-tests a paused mailbox on schedule

    async def _known(self, mailbox_id: str) -> str | None:
        """404 unless the mailbox is known; its owner's user id (None for a queue)."""
        doc = await self.repo.mailboxes.find_one(
            {"_id": mailbox_id, "snapshot": {"$ne": None}}, {"snapshot.owner": 1}
        )
        if doc is None:
            raise DomainError(404, f"mailbox {mailbox_id} is not known to sync-svc", "mailbox_id")
        owner = doc["snapshot"].get("owner") or {}
        return str(owner["id"]) if owner.get("kind") == "user" and owner.get("id") else None

    def _view(self, doc: Document, mailbox_id: str) -> SyncState:
        episode = doc.get("episode") or {}
        resync = doc.get("resync_from")
        return SyncState(
            mailbox_id=mailbox_id,
            synced=mailbox_id in self.targets() and not doc.get("paused"),
            paused=bool(doc.get("paused")),
            protocol=doc.get("protocol"),
            mode=doc.get("mode"),
            uidvalidity=doc.get("uidvalidity"),
            last_uid=doc.get("last_uid"),
            messages_seen=int(doc.get("messages_seen") or 0),
            last_sync_at=doc.get("last_sync_at"),
            last_error=SyncError.model_validate(doc["last_error"]) if doc.get("last_error") else None,
            failing_since=episode.get("first_failed_at"),
            resync_from=resync.date() if isinstance(resync, datetime) else resync,
        )

    async def state(self, req: MailboxRequest) -> SyncState:
        owner_id = await self._known(req.mailbox_id)
        require_mailbox("mailboxes:read", req.mailbox_id, owner_id)  # an owner or integration: its own
        return self._view(await self.repo.get_state(req.mailbox_id), req.mailbox_id)

    async def pause(self, req: MailboxRequest) -> SyncState:
        await self._known(req.mailbox_id)
        doc = await self.repo.control(req.mailbox_id, {"paused": True})
        self.wake()
        await self.announce(MailboxSyncPaused(mailbox_id=req.mailbox_id, paused=True))
        return self._view(doc, req.mailbox_id)

    async def resume(self, req: MailboxRequest) -> SyncState:
        await self._known(req.mailbox_id)
        doc = await self.repo.control(req.mailbox_id, {"paused": False})
        self.wake()
        await self.announce(MailboxSyncPaused(mailbox_id=req.mailbox_id, paused=False))
        return self._view(doc, req.mailbox_id)

    async def resync(self, req: ResyncRequest) -> SyncState:
        await self._known(req.mailbox_id)
        start = datetime(req.from_date.year, req.from_date.month, req.from_date.day)
        doc = await self.repo.control(req.mailbox_id, {"resync_from": start})
        self.wake()
        return self._view(doc, req.mailbox_id)
