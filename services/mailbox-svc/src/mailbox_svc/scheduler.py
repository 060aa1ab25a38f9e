"""Due retries: transient failures are retried from the database, so they survive a restart.

Each due mailbox gets a new TestRequested with the next attempt number, written with a conditional
update on the retry time it was picked with, so two replicas never both send it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from contracts.envelope import Envelope
from contracts.events import Event, TestRequested
from mailbox_svc.clock import utcnow
from mailbox_svc.documents import MailboxDoc
from mailbox_svc.repository import Repository
from mailbox_svc.testing import Rings, TestRefused, build_request, pending_fields
from mailwarden_runtime.loop import BackgroundLoop
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.outbox import outbox_entry, with_outbox

log = logging.getLogger(__name__)

BATCH = 100


@dataclass(eq=False)
class DueTestLoop:
    """A loop that finds mailboxes due a test and requests them: the retries here, the scheduled
    re-tests (``retests.py``). Each request is written with the mailbox's version and a condition
    on what it was picked with, its TestRequested in the same write (outbox).

    A dataclass, so a subclass adds its own state as fields without repeating the constructor."""

    name: ClassVar[str] = "due-tests"

    repo: Repository
    rings: Rings
    envelop: Callable[[Event], Envelope[Any]]
    wake_relay: Callable[[], None]
    poll_s: float

    def __post_init__(self) -> None:
        self._loop = BackgroundLoop(self.name, self._pass, self.poll_s)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _pass(self) -> bool:
        return await self.run_once() >= BATCH

    async def run_once(self) -> int:
        raise NotImplementedError

    async def request(self, doc: MailboxDoc, req: TestRequested, condition: Document, now: datetime) -> bool:
        """Write the pending test and its TestRequested, if ``doc`` is still as it was picked."""
        update = with_outbox(
            {"$set": {**pending_fields(req), "updated_at": now}, "$inc": {"version": 1}},
            [outbox_entry(self.envelop(req))],
        )
        return await self.repo.update_if(doc.id, doc.version, update, condition)


class RetryScheduler(DueTestLoop):
    name: ClassVar[str] = "retry-scheduler"

    async def run_once(self) -> int:
        """Send every due retry; returns how many were due."""
        now = utcnow()
        due = await self.repo.due_retries(now, BATCH)
        if not due:
            return 0
        settings = await self.repo.read.get_settings()
        sent = 0
        for doc in due:
            profile = await self.repo.read.get_profile(doc.profile_id or "")
            q = {"next_retry_at": doc.next_retry_at}
            try:
                req = build_request(
                    doc,
                    profile,
                    settings,
                    self.rings,
                    now,
                    attempt=doc.retry_attempt or 2,
                    directions=doc.retry_directions or None,
                )
            except TestRefused as exc:
                log.warning("retry dropped", extra={"mailbox_id": doc.id, "reason": exc.code})
                await self.repo.update_if(
                    doc.id,
                    doc.version,
                    {
                        "$set": {"next_retry_at": None, "test_scheduled": False, "updated_at": now},
                        "$inc": {"version": 1},
                    },
                    q,
                )
                continue
            if await self.request(doc, req, q, now):
                sent += 1
                log.info("retry requested", extra={"mailbox_id": doc.id, "attempt": req.attempt})
        if sent:
            self.wake_relay()
        return len(due)
