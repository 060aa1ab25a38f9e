"""Scheduled re-tests: enabled mailboxes that nothing exercises continuously are tested again.

A mailbox synchronized by sync-svc shows a changed password or an expired certificate within a
poll (MailboxSyncFailed, then a re-test). One that is enabled but not synchronized (outgoing only,
incoming by another delivery method, or its sync paused by an operator) would show it only when
mail fails. So, every ``retest_interval_s`` of the org settings (daily by default, 0: never) after
its last test, such a mailbox gets a TestRequested for its enabled directions: the usual result
policy then retries or disables, sets the status, and alert-svc alerts.

Sync pauses arrive as MailboxSyncPaused and are kept apart from the mailbox documents, in
``sync_paused`` (one small document per paused mailbox). The request is written with a condition on
the last test time it was picked with, so two replicas never both send it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar

from contracts.email import MailboxSyncPaused
from contracts.envelope import Envelope
from mailbox_svc.clock import utcnow
from mailbox_svc.documents import MailboxDoc
from mailbox_svc.scheduler import BATCH, DueTestLoop
from mailbox_svc.store.mailboxes import RetestFilter
from mailbox_svc.testing import TestRefused

log = logging.getLogger(__name__)
SCAN_GAP_MAX_S = 60.0
"""The longest wait between two searches for due re-tests (see :meth:`ScheduledRetests.run_once`)."""


def enabled_directions(doc: MailboxDoc) -> list[str]:
    return [d for d, on in (("incoming", doc.enabled_incoming), ("outgoing", doc.enabled_outgoing)) if on]


@dataclass(eq=False)
class ScheduledRetests(DueTestLoop):
    name: ClassVar[str] = "scheduled-retests"

    _skipped: dict[str, datetime] = field(default_factory=dict, init=False)
    """Mailboxes left out until a time (they could not be tested)."""
    _searched_at: datetime | None = field(default=None, init=False)
    """When due re-tests were last searched for (see :meth:`run_once`)."""

    async def sync_paused(self, envelope: Envelope[MailboxSyncPaused]) -> None:
        """Remember which mailboxes an operator paused (resumed: forgotten)."""
        event = envelope.data
        await self.stores.mailboxes.set_sync_paused(event.mailbox_id, event.paused, envelope.occurred_at)

    async def _due(self, cutoff: datetime) -> list[MailboxDoc]:
        """Enabled, idle (no test pending or scheduled), last tested before ``cutoff``, and not
        synchronized continuously; the longest untested first."""
        skip = list(self._skipped)
        found = await self.stores.mailboxes.due_retests(RetestFilter(cutoff, skip), BATCH)
        paused = await self.stores.mailboxes.sync_paused_ids(10 * BATCH)
        if paused and len(found) < BATCH:
            found += await self.stores.mailboxes.due_retests(RetestFilter(cutoff, skip, paused), BATCH)
        found.sort(key=lambda d: d.last_test_completed_at or cutoff)
        return found[:BATCH]

    async def run_once(self) -> int:
        """Request every due re-test; returns how many were due."""
        settings = await self.stores.read.get_settings()
        if not settings.retest_interval_s:
            return 0
        now = utcnow()
        interval = timedelta(seconds=settings.retest_interval_s)
        # No index serves "last tested before": each search reads every mailbox (SecantusDB: 340 ms
        # of its CPU at 10,000), so it runs at most every 1/100 of the interval (a minute at most),
        # not every poll; a full batch found searches again at once.
        gap = timedelta(seconds=min(settings.retest_interval_s / 100, SCAN_GAP_MAX_S))
        if self._searched_at is not None and now - self._searched_at < gap:
            return 0
        self._searched_at = now
        self._skipped = {m: until for m, until in self._skipped.items() if until > now}
        due = await self._due(now - interval)
        if len(due) >= BATCH:
            self._searched_at = None
        sent = 0
        for doc in due:
            picked = ("last_test_completed_at", "pending_test_id")  # still untested since, still idle
            try:
                directions = enabled_directions(doc)
                req = await self.build(doc, settings, now, directions=directions)
            except TestRefused as exc:
                # Not testable now (its profile was deleted, ...): left out for one interval, so it
                # does not fill every pass's batch.
                log.warning("scheduled re-test dropped", extra={"mailbox_id": doc.id, "reason": exc.code})
                self._skipped[doc.id] = now + interval
                continue
            if await self.request(doc, req, picked, now):
                sent += 1
                log.info(
                    "scheduled re-test requested",
                    extra={"mailbox_id": doc.id, "directions": directions},
                )
        if sent:
            self.wake_relay()
        return len(due)
