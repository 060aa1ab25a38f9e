"""Sync state and controls of one mailbox: the same operations on HTTP and NATS request-reply.

Pause stops the mailbox's sync on whichever worker holds it (within one reconcile interval);
resume starts it again; resync from a date lists the INBOX since then and publishes only what
was never published (the ledger recognises the rest), then carries on incrementally.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.email import MailboxResyncRequested, MailboxSyncPaused
from contracts.models import Identifier
from mailwarden_runtime.auth import require_mailbox
from mailwarden_runtime.auth.context import current_actor
from mailwarden_runtime.http import DomainError
from sync_svc.documents import SyncError, SyncStateDoc
from sync_svc.store import Stores
from sync_svc.store.states import Controls


class MailboxRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mailbox_id: Identifier


class ResyncRequest(MailboxRequest):
    from_date: date = Field(description="Publish what arrived since this day and was never published.")


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
    messages_tracked: Annotated[int, Field(ge=0)] = 0
    """Published messages a consuming system answered EmailTracked about (counted once each)."""
    messages_rejected: Annotated[int, Field(ge=0)] = 0
    """Published messages a consuming system answered EmailRejected about (counted once each)."""
    last_sync_at: datetime | None = None
    last_error: SyncError | None = None
    failing_since: datetime | None = None
    resync_from: date | None = None


class Operations:
    def __init__(
        self,
        stores: Stores,
        targets: Callable[[], set[str]],
        wake: Callable[[], None],
        announce: Callable[[MailboxSyncPaused | MailboxResyncRequested], Awaitable[None]],
    ) -> None:
        self.stores = stores
        self.targets = targets
        self.wake = wake
        self.announce = announce
        """Publishes the control with its actor (the audit); mailbox-svc re-tests a paused mailbox."""

    async def _known(self, mailbox_id: str) -> str | None:
        """404 unless the mailbox is known; its owner's user id (None for a queue)."""
        entry = await self.stores.read.get_mailbox(mailbox_id)
        if entry is None or entry.snapshot is None:
            raise DomainError(404, f"mailbox {mailbox_id} is not known to sync-svc", "mailbox_id")
        owner = entry.snapshot.owner
        return owner.id if owner.kind == "user" and owner.id else None

    async def _view(self, doc: SyncStateDoc, mailbox_id: str) -> SyncState:
        tracked, rejected = await self.stores.answers.feedback_counts(mailbox_id)
        resync = doc.resync_from
        return SyncState(
            mailbox_id=mailbox_id,
            synced=mailbox_id in self.targets() and not doc.paused,
            paused=doc.paused,
            protocol=doc.protocol,
            mode=doc.mode,
            uidvalidity=doc.uidvalidity,
            last_uid=doc.last_uid,
            messages_seen=doc.messages_seen,
            messages_tracked=tracked,
            messages_rejected=rejected,
            last_sync_at=doc.last_sync_at,
            last_error=doc.last_error,
            failing_since=None if doc.episode is None else doc.episode.first_failed_at,
            resync_from=None if resync is None else resync.date(),
        )

    async def state(self, req: MailboxRequest) -> SyncState:
        owner_id = await self._known(req.mailbox_id)
        require_mailbox("mailboxes:read", req.mailbox_id, owner_id)  # an owner or integration: its own
        return await self._view(await self.stores.states.get_state(req.mailbox_id), req.mailbox_id)

    @staticmethod
    def _by_caller(controls: Controls) -> Controls:
        """The control as stored: who asked for it, and when (the audit, beside the event)."""
        return controls | {"controlled_by": current_actor() or "", "controlled_at": datetime.now(UTC)}

    async def pause(self, req: MailboxRequest) -> SyncState:
        await self._known(req.mailbox_id)
        doc = await self.stores.states.control(req.mailbox_id, self._by_caller({"paused": True}))
        self.wake()
        await self.announce(MailboxSyncPaused(mailbox_id=req.mailbox_id, paused=True))
        return await self._view(doc, req.mailbox_id)

    async def resume(self, req: MailboxRequest) -> SyncState:
        await self._known(req.mailbox_id)
        doc = await self.stores.states.control(req.mailbox_id, self._by_caller({"paused": False}))
        self.wake()
        await self.announce(MailboxSyncPaused(mailbox_id=req.mailbox_id, paused=False))
        return await self._view(doc, req.mailbox_id)

    async def resync(self, req: ResyncRequest) -> SyncState:
        await self._known(req.mailbox_id)
        start = datetime(req.from_date.year, req.from_date.month, req.from_date.day)
        doc = await self.stores.states.control(req.mailbox_id, self._by_caller({"resync_from": start}))
        self.wake()
        await self.announce(MailboxResyncRequested(mailbox_id=req.mailbox_id, from_date=req.from_date))
        return await self._view(doc, req.mailbox_id)
