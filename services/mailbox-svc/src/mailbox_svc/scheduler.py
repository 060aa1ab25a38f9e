"""Due retries: transient failures are retried from the database, so they survive a restart.

Each due mailbox gets a new TestRequested with the next attempt number, written with a conditional
update on the retry time it was picked with, so two replicas never both send it.

The same field is a requested test's watchdog (``testing.pending_test``): a mailbox still waiting
on its test when that time comes gets the test's stored run applied (its result handler gave up
after storing it, docs/reliability.md finding 12). With no run stored, the test is requested again
under the same test id (its result, or a late one, is applied once), up to ``watchdog_resends``
times; then it fails with ``no_result`` (``unanswered.py``), through the result handler.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from contracts.envelope import Envelope
from contracts.events import Event, SettingsSnapshot, TestCompleted, TestRequested
from mailbox_svc.clock import utcnow
from mailbox_svc.documents import MailboxDoc, PendingTest
from mailbox_svc.handlers import WITHDRAWN_FIELDS
from mailbox_svc.store import Stores
from mailbox_svc.store.mailboxes import MailboxWrite
from mailbox_svc.testing import Rings, TestRefused, build_request, pending_test
from mailbox_svc.unanswered import unanswered
from mailwarden_runtime.documents import as_stored, fields
from mailwarden_runtime.loop import BackgroundLoop
from mailwarden_runtime.outbox import outbox_entry

log = logging.getLogger(__name__)

BATCH = 100


@dataclass(eq=False)
class DueTestLoop:
    """A loop that finds mailboxes due a test and requests them: the retries here, the scheduled
    re-tests (``retests.py``). Each request is written with the mailbox's version and a condition
    on what it was picked with, its TestRequested in the same write (outbox).

    A dataclass, so a subclass adds its own state as fields without repeating the constructor."""

    name: ClassVar[str] = "due-tests"

    stores: Stores
    rings: Rings
    envelop: Callable[[Event], Envelope[Any]]
    wake_relay: Callable[[], None]
    poll_s: float
    result_watchdog_s: float = field(kw_only=True)
    """How long a requested test may go unanswered before its stored result is looked for."""

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

    async def build(
        self,
        doc: MailboxDoc,
        settings: SettingsSnapshot,
        now: datetime,
        *,
        directions: list[str] | None,
        attempt: int = 1,
        test_id: str | None = None,
        job_id: str | None = None,
    ) -> TestRequested:
        """``doc``'s request with its profile as stored now (:func:`build_request`: raises
        :class:`TestRefused` when the mailbox cannot be tested)."""
        profile = await self.stores.read.get_profile(doc.profile_id or "")
        return build_request(
            doc,
            profile,
            settings,
            self.rings,
            now,
            test_id=test_id,
            attempt=attempt,
            job_id=job_id,
            directions=directions,
        )

    async def request(
        self, doc: MailboxDoc, req: TestRequested, unchanged: Collection[str], now: datetime
    ) -> bool:
        """Write the pending test and its TestRequested, if ``doc`` (and its ``unchanged`` fields)
        is still as it was picked."""
        pending = as_stored(pending_test(req, self.result_watchdog_s))
        write = MailboxWrite(doc, pending, [outbox_entry(self.envelop(req))], unchanged, updated_at=now)
        return await self.stores.mailboxes.update_if(write)


@dataclass(eq=False)
class RetryScheduler(DueTestLoop):
    name: ClassVar[str] = "retry-scheduler"

    apply_result: Callable[[TestCompleted], Awaitable[None]] = field(kw_only=True)
    """The result handler (``Handlers.apply_result``): applies a result once, idempotently."""
    watchdog_resends: int = field(kw_only=True, default=2)
    """How often a test with no stored result at its watchdog is requested again before it fails."""

    async def run_once(self) -> int:
        """Send every due retry, look after every overdue test; returns how many were due."""
        now = utcnow()
        found = await self.stores.mailboxes.due_retries(now, BATCH)
        if not found:
            return 0
        overdue = [doc for doc in found if doc.pending_test_id]
        if overdue:
            await self._overdue(overdue, now)
        await self._retry([doc for doc in found if not doc.pending_test_id], now)
        return len(found)

    async def _overdue(self, docs: list[MailboxDoc], now: datetime) -> None:
        """Apply the stored run of each test its mailbox still waits on past the watchdog. A test
        with no run stored (lost on its way, or its result's handler gave up before storing it) is
        requested again, or fails with ``no_result`` once it was requested ``watchdog_resends``
        times more; each write is conditional on the watchdog it was picked with."""
        stored = await self.stores.runs.stored_results([doc.pending_test_id or "" for doc in docs])
        settings = await self.stores.read.get_settings()
        for doc in docs:
            result = stored.get(doc.pending_test_id or "")
            if result is not None:
                await self.apply_result(result)
                log.warning(
                    "applied a stored result its handler had given up on",
                    extra={"mailbox_id": doc.id, "test_id": result.test_id},
                )
            elif doc.watchdog_resends < self.watchdog_resends:
                await self._resend(doc, settings, now)
            else:
                await self._fail_unanswered(doc, now)

    async def _resend(self, doc: MailboxDoc, settings: SettingsSnapshot, now: datetime) -> None:
        """Request the pending test again: same id, attempt, job and directions; a new watchdog."""
        try:
            req = await self.build(
                doc,
                settings,
                now,
                test_id=doc.pending_test_id,
                attempt=doc.pending_attempt or 1,
                job_id=doc.pending_job_id,
                directions=doc.pending_directions or None,
            )
        except TestRefused as exc:
            log.warning(
                "unanswered test cannot be requested again",
                extra={"mailbox_id": doc.id, "test_id": doc.pending_test_id, "reason": exc.code},
            )
            await self._fail_unanswered(doc, now)
            return
        pending = pending_test(req, self.result_watchdog_s).model_copy(
            update={"watchdog_resends": doc.watchdog_resends + 1}
        )
        picked = ("next_retry_at", "pending_test_id")
        write = MailboxWrite(
            doc, as_stored(pending), [outbox_entry(self.envelop(req))], picked, versioned=False
        )
        if await self.stores.mailboxes.update_if(write):
            self.wake_relay()
            log.warning(
                "test unanswered at its watchdog: requested again",
                extra={"mailbox_id": doc.id, "test_id": req.test_id, "resend": doc.watchdog_resends + 1},
            )

    async def _fail_unanswered(self, doc: MailboxDoc, now: datetime) -> None:
        """Fail the pending test with ``no_result`` through the result handler (stored once, one
        status change); with its profile gone there is nothing to report it against, so the
        mailbox just stops waiting."""
        profile = await self.stores.read.get_profile(doc.profile_id or "")
        if profile is None:
            cleared = as_stored(PendingTest(), WITHDRAWN_FIELDS)
            picked = ("next_retry_at", "pending_test_id")
            await self.stores.mailboxes.update_if(
                MailboxWrite(doc, cleared, unchanged=picked, updated_at=now)
            )
            log.warning(
                "unanswered test dropped: its profile is gone",
                extra={"mailbox_id": doc.id, "test_id": doc.pending_test_id},
            )
            return
        await self.apply_result(unanswered(doc, profile, doc.watchdog_resends, now))
        log.warning(
            "test failed at its watchdog: no result",
            extra={
                "mailbox_id": doc.id,
                "test_id": doc.pending_test_id,
                "requested": doc.watchdog_resends + 1,
            },
        )

    async def _retry(self, due: list[MailboxDoc], now: datetime) -> None:
        if not due:
            return
        settings = await self.stores.read.get_settings()
        sent = 0
        for doc in due:
            picked = ("next_retry_at",)
            try:
                req = await self.build(
                    doc,
                    settings,
                    now,
                    attempt=doc.retry_attempt or 2,
                    directions=doc.retry_directions or None,
                )
            except TestRefused as exc:
                log.warning("retry dropped", extra={"mailbox_id": doc.id, "reason": exc.code})
                dropped = fields(MailboxDoc, next_retry_at=None, test_scheduled=False)
                await self.stores.mailboxes.update_if(
                    MailboxWrite(doc, dropped, unchanged=picked, updated_at=now)
                )
                continue
            if await self.request(doc, req, picked, now):
                sent += 1
                log.info("retry requested", extra={"mailbox_id": doc.id, "attempt": req.attempt})
        if sent:
            self.wake_relay()
