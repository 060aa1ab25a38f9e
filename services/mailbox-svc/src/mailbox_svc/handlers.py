"""Event handlers: the policy on TestCompleted (the read models are kept by ``mailwarden_runtime.readmodels``).

Idempotent: a test run is stored once by test id, and a mailbox applies a result only once: while
that test id is its pending one, or, for a job's test (not recorded on the mailbox, see jobs.py),
while no other test is pending, the test is not the mailbox's last one, finished after it, and was
requested after the mailbox last started untested.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from contracts.envelope import Envelope
from contracts.errors import ErrorCode
from contracts.events import (
    Event,
    SettingsSnapshot,
    TestCompleted,
)
from mailbox_svc.clock import utcnow
from mailbox_svc.documents import MailboxDoc, PendingTest, TestRunDoc
from mailbox_svc.jobsweep import SweepScope
from mailbox_svc.policy import Decision, RetryPolicy, decide, outcome
from mailbox_svc.store import Stores
from mailbox_svc.store.mailboxes import MailboxWrite
from mailbox_svc.store.runs import WITHDRAWN
from mailbox_svc.testing import job_test_id
from mailwarden_runtime.documents import as_stored
from mailwarden_runtime.outbox import outbox_entry

log = logging.getLogger(__name__)

MAX_RACES = 5
PENDING = ("pending_test_id",)
"""A result's write applies only while the mailbox waits on the test it was decided on."""
WITHDRAWN_FIELDS = (
    "pending_test_id",
    "pending_attempt",
    "pending_job_id",
    "pending_directions",
    "test_scheduled",
    "next_retry_at",
    "watchdog_resends",
)
"""What a withdrawn test clears (to :class:`PendingTest`'s defaults): no test pending or scheduled,
and the pending test's watchdog (``testing.pending_test``)."""


class Handlers:
    def __init__(
        self,
        stores: Stores,
        retry: RetryPolicy,
        envelop: Callable[[Event, str | None], Envelope[Any]],
        wake_relay: Callable[[], None],
        on_job_results: Callable[[dict[str, dict[str, int]]], None],
        rng: random.Random | None = None,
        on_job_taken: Callable[[str, list[str]], None] | None = None,
    ) -> None:
        self.mailboxes = stores.mailboxes
        self.runs = stores.runs
        self.jobs = stores.jobs
        self.read = stores.read
        self.retry = retry
        self.envelop = envelop
        self.wake_relay = wake_relay
        self.on_job_results = on_job_results
        """Newly stored results per job and outcome: the job runner counts them (jobs.py)."""
        self.on_job_taken = on_job_taken
        """A job's mailboxes that applied its test (job id, mailbox ids): its closing sweep need
        not read them (jobsweep.py)."""
        self.rng = rng or random.Random()

    async def test_completed(self, env: Envelope[TestCompleted]) -> None:
        result = env.data
        mailbox_id = result.mailbox.mailbox_id
        now = utcnow()
        doc = await self.mailboxes.get(mailbox_id)
        if await self._withdrawn(doc, result):
            await self._withdraw(doc, result, now)
            return
        settings = await self.read.get_settings()
        decision = self._decision(doc, result, settings, now)
        run = self._run(doc, result, decision, now)
        stored = await self.runs.record_one(run)
        job_id = self._job_of(doc, result)
        if job_id:
            self.on_job_results({job_id: {run.outcome: 1} if stored else {}})
        for _ in range(MAX_RACES):
            if doc is None or decision is None:
                log.debug("result is not the pending test: stored only", extra={"test_id": result.test_id})
                return
            applied = await self.mailboxes.update_if(self._write(doc, env, decision, now))
            if applied:
                self._taken([result])
                self.wake_relay()
                self._log_applied(result, decision)
                return
            doc = await self.mailboxes.get(mailbox_id)
            decision = self._decision(doc, result, settings, now)
        raise RuntimeError("mailbox kept changing while applying a test result")

    async def test_completed_batch(self, envs: Sequence[Envelope[TestCompleted]]) -> None:
        """Many results in three round trips: read their mailboxes, store the runs, apply them.

        A result whose conditional update loses a race (or a second result for the same mailbox
        in the batch) goes through :meth:`test_completed` afterwards, which is idempotent with
        this: a stored run is not stored again and an applied test is no longer pending.
        """
        now = utcnow()
        docs = await self.mailboxes.get_many([e.data.mailbox.mailbox_id for e in envs])
        settings = await self.read.get_settings()
        first: dict[str, Envelope[TestCompleted]] = {}
        later: list[Envelope[TestCompleted]] = []
        job_ids = {j for e in envs if (j := self._job_of(docs.get(e.data.mailbox.mailbox_id), e.data))}
        cancelled = await self.jobs.cancelled_at(job_ids)
        for env in envs:
            job_id = self._job_of(docs.get(env.data.mailbox.mailbox_id), env.data)
            if env.data.withdrawn or (job_id and job_id in cancelled):
                later.append(env)  # a cancelled job's result: settled one by one (rare)
            elif env.data.mailbox.mailbox_id in first:
                later.append(env)
            else:
                first[env.data.mailbox.mailbox_id] = env
        runs: list[TestRunDoc] = []
        writes: list[MailboxWrite] = []
        applied: list[tuple[TestCompleted, Decision]] = []
        jobs: set[str] = set()
        for mailbox_id, env in first.items():
            doc = docs.get(mailbox_id)
            decision = self._decision(doc, env.data, settings, now)
            runs.append(self._run(doc, env.data, decision, now))
            if job_id := self._job_of(doc, env.data):
                jobs.add(job_id)
            if doc is not None and decision is not None:
                writes.append(self._write(doc, env, decision, now))
                applied.append((env.data, decision))
        counts: dict[str, dict[str, int]] = {job_id: {} for job_id in jobs}
        for run in await self.runs.record(runs):
            if run.job_id:
                by_outcome = counts.setdefault(run.job_id, {})
                by_outcome[run.outcome] = by_outcome.get(run.outcome, 0) + 1
        modified = await self.mailboxes.bulk_update(writes)
        self.on_job_results(counts)
        if writes:
            self.wake_relay()
        if modified != len(writes):
            later = list(first.values()) + later  # some lost a race: settle each one by one
        else:
            self._taken([result for result, _ in applied])
            for result, decision in applied:
                self._log_applied(result, decision)
        for env in later:
            await self.test_completed(env)

    async def apply_result(self, result: TestCompleted) -> None:
        """Apply a stored result again (the retry loop, at its test's watchdog): once, as its
        delivery would have, with its one MailboxStatusChanged; nothing if it was applied already."""
        await self.test_completed(self.envelop(result, result.test_id))

    async def apply_stored(self, job_id: str, profile_id: str, scope: SweepScope | None = None) -> int:
        """Apply the job's results whose run is stored but whose mailbox never took them.

        A handler stores the run before it updates the mailbox; if the update keeps failing (a
        database outage longer than the consumer's retries), the message is dead-lettered, yet
        the stored run counts for the job. The job calls this before it completes: each such
        result goes through :meth:`test_completed` again, which applies it once (conditional on
        the mailbox's version, with its one MailboxStatusChanged) and stores nothing twice.
        Results a later test superseded (e.g. a retry's) do not apply and are left as they are.
        ``scope``: only these of the profile's mailboxes (the others were found done while the job
        ran: jobsweep.py); None: all of them. Returns how many were applied now.
        """
        shown = await self.mailboxes.last_tests(profile_id, None if scope is None else scope.ids)
        log.info(
            "job's stored results swept",
            extra={"job_id": job_id, "mailboxes_read": len(shown), "whole_profile": scope is None},
        )
        other = [t for m, last in shown.items() if last != (t := job_test_id(job_id, m))]
        runs = await self.runs.by_ids(other)
        docs = await self.mailboxes.get_many([run.mailbox_id for run in runs])
        lost = [
            result
            for run in runs
            if (doc := docs.get(run.mailbox_id)) is not None and applies(doc, result := run.result)
        ]
        for result in lost:
            await self.apply_result(result)
        if lost:
            log.warning(
                "applied stored results their handler had given up on",
                extra={"job_id": job_id, "count": len(lost), "test_ids": [r.test_id for r in lost[:20]]},
            )
        return len(lost)

    async def _withdrawn(self, doc: MailboxDoc | None, result: TestCompleted) -> bool:
        """Not run, or started after its job was cancelled: the cancel withdrew it.

        Tests that had started when the job was cancelled finish, apply and count as usual.
        """
        if result.withdrawn:
            return True
        job_id = self._job_of(doc, result)
        if not job_id:
            return False
        cancelled = (await self.jobs.cancelled_at({job_id})).get(job_id)
        return cancelled is not None and result.started_at > cancelled

    async def _withdraw(self, doc: MailboxDoc | None, result: TestCompleted, now: datetime) -> None:
        """Store the run as withdrawn and free the mailbox from waiting: no status, alert or retry."""
        run = self._run(doc, result, None, now).model_copy(update={"outcome": WITHDRAWN})
        await self.runs.record_one(run)
        for _ in range(MAX_RACES):
            if doc is None or doc.pending_test_id != result.test_id:
                break
            withdrawn = as_stored(PendingTest(), WITHDRAWN_FIELDS)
            if await self.mailboxes.update_if(
                MailboxWrite(doc, withdrawn, unchanged=PENDING, updated_at=now)
            ):
                break
            doc = await self.mailboxes.get(doc.id)
        log.info("test withdrawn by its job's cancel", extra={"test_id": result.test_id})

    def _taken(self, results: list[TestCompleted]) -> None:
        """Tell the job runner which mailboxes applied their job's test (jobsweep.py)."""
        if self.on_job_taken is None:
            return
        by_job: dict[str, list[str]] = {}
        for r in results:
            if r.job_id and r.test_id == job_test_id(r.job_id, r.mailbox.mailbox_id):
                by_job.setdefault(r.job_id, []).append(r.mailbox.mailbox_id)
        for job_id, mailbox_ids in by_job.items():
            self.on_job_taken(job_id, mailbox_ids)

    @staticmethod
    def _job_of(doc: MailboxDoc | None, result: TestCompleted) -> str | None:
        pending = doc is not None and doc.pending_test_id == result.test_id
        job_id = doc.pending_job_id if pending and doc is not None else None
        return job_id or result.job_id

    def _decision(
        self, doc: MailboxDoc | None, result: TestCompleted, settings: SettingsSnapshot, now: datetime
    ) -> Decision | None:
        """What the result does to the mailbox; None unless it is the test that applies (:func:`applies`)."""
        if doc is None or not applies(doc, result):
            return None
        return decide(doc, result, settings, self.retry, now, self.rng)

    @staticmethod
    def _run(
        doc: MailboxDoc | None, result: TestCompleted, decision: Decision | None, now: datetime
    ) -> TestRunDoc:
        return TestRunDoc(
            id=result.test_id,
            mailbox_id=result.mailbox.mailbox_id,
            attempt=result.attempt,
            job_id=Handlers._job_of(doc, result),
            outcome=run_outcome(result, decision),
            disabled_reason=decision.state.disabled_reason if decision else None,
            received_at=now,
            result=result,
        )

    def _write(
        self, doc: MailboxDoc, env: Envelope[TestCompleted], decision: Decision, now: datetime
    ) -> MailboxWrite:
        """The mailbox's write, carrying its MailboxStatusChanged, while the test is still its pending one."""
        entry = outbox_entry(self.envelop(decision.event, env.correlation_id))
        return MailboxWrite(doc, as_stored(decision.state), [entry], unchanged=PENDING, updated_at=now)

    @staticmethod
    def _log_applied(result: TestCompleted, decision: Decision) -> None:
        log.info(
            "test result applied",
            extra={
                "mailbox_id": result.mailbox.mailbox_id,
                "test_id": result.test_id,
                "outcome": run_outcome(result, decision),
                "retry": bool(decision.retry_directions),
            },
        )


def applies(doc: MailboxDoc, result: TestCompleted) -> bool:
    """Whether ``result`` changes the mailbox: its pending test, or a job's test nothing superseded.

    A job requests its tests without writing to the mailboxes (jobs.py), so its result applies
    when no other test is pending (that one's result will), the mailbox has not applied it or a
    test that finished later, and it was requested after the mailbox last started untested (its
    server changed or it was deactivated: the result is about the old server).
    """
    if doc.pending_test_id is not None:
        return doc.pending_test_id == result.test_id
    if not result.job_id or result.test_id != job_test_id(result.job_id, doc.id):
        return False
    if doc.last_test_id == result.test_id:
        return False
    if doc.last_test_completed_at is not None and result.finished_at <= doc.last_test_completed_at:
        return False
    reset = doc.tests_reset_at
    return reset is None or (result.requested_at is not None and result.requested_at > reset)


def run_outcome(result: TestCompleted, decision: Decision | None) -> str:
    """The result's outcome, except that a passing but unapproved mailbox says so."""
    code = outcome(result)
    if code == "success" and decision is not None:
        if decision.event.disabled_reason is ErrorCode.MAILBOX_NOT_APPROVED:
            return ErrorCode.MAILBOX_NOT_APPROVED.value
    return code
