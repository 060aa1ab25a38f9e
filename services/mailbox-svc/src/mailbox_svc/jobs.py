"""Test & Enable all mailboxes of a profile, as a stored job expanded in batches in the background.

The job document and its batch records are the truth (jobexpansion.py): the last record's cursor
says how far it has expanded, so a restart resumes where it stopped. A batch's TestRequested events
are published straight to JetStream, not written to the mailboxes (one document update per test
less): test and event ids are derived from (job, mailbox), so a batch published again after a crash
is dropped by JetStream's duplicate window, and a test that ran twice anyway (a re-publish after the
window) is stored and applied once, by its test id. A batch is recorded (inserted) only after every
event of it is stored. Counts of results are read from the stored test runs when asked
(jobresults.py), so the job document is written at its start and at its end, never while it runs;
its progress events are published straight to JetStream. The job never has more than
``max_in_flight`` tests without a result, nor more than twice what its profile's servers take at
once, so thousands of mailboxes do not flood the testers and a dead server's job does not queue
ahead of everyone else's tests; cancelling stops the expansion and publishes the summary at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from contracts.envelope import Envelope
from contracts.events import Event, ProfileSnapshot
from contracts.jobs import JobProgress, TestJobCompleted, TestJobProgress, TestJobStarted
from mailbox_svc.clock import utcnow
from mailbox_svc.documents import JobBatchDoc, JobDoc, JobState
from mailbox_svc.jobexpansion import JobExpansions
from mailbox_svc.jobqueue import JobMailboxIds
from mailbox_svc.jobresults import JobResults
from mailbox_svc.jobsweep import JobSweeps, SweepScope
from mailbox_svc.jobwrite import JobWrite
from mailbox_svc.models import JobView
from mailbox_svc.profiles import ProfileDirectory, ProfileUnavailable
from mailbox_svc.store import Stores
from mailbox_svc.testing import Rings, TestRefused, build_request, job_test_id
from mailwarden_runtime.auth.context import current_actor
from mailwarden_runtime.documents import fields
from mailwarden_runtime.http import DomainError
from mailwarden_runtime.loop import BackgroundLoop
from mailwarden_runtime.outbox import outbox_entry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """What one expansion recorded: the cursor after it, how many were requested and refused why."""

    cursor: str | None
    requested: int = 0
    refused: Mapping[str, int] = field(default_factory=dict)
    expanded: bool = False


LEASE_S = 60.0
RECONCILE_AFTER_S = 10.0
MIN_PASS_INTERVAL_S = 0.25
PROGRESS_EVERY_S = 1.0


class JobRunner:
    def __init__(
        self,
        stores: Stores,
        rings: Rings,
        envelop: Callable[[Event], Envelope[Any]],
        wake_relay: Callable[[], None],
        publish: Callable[[Envelope[Any]], Awaitable[object]],
        instance: str,
        batch_size: int,
        max_in_flight: int,
        poll_s: float,
        profiles: ProfileDirectory,
        apply_stored: Callable[[str, str, SweepScope | None], Awaitable[object]],
    ) -> None:
        self.mailboxes = stores.mailboxes
        self.jobs = stores.jobs
        self.read = stores.read
        self.apply_stored = apply_stored
        """Applies a job's stored results no mailbox took (job id, profile id, which mailboxes to
        read: None, all of the profile): see :meth:`_complete`."""
        self.profiles = profiles
        self.rings = rings
        self.envelop = envelop
        self.wake_relay = wake_relay
        self.publish = publish
        self.instance = instance
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.poll_s = poll_s
        self._moved: set[str] = set()  # jobs with results stored here since their last progress event
        self.results = JobResults(stores.runs)
        self.expansions = JobExpansions(stores.jobs, LEASE_S)
        self.sweeps = JobSweeps()
        self._sent: dict[str, tuple[float, JobProgress]] = {}  # last progress published per job, when
        self.queued = JobMailboxIds(stores.mailboxes)
        self._caps: dict[str, int] = {}  # the in-flight cap each job was last measured against
        self._loop = BackgroundLoop(
            "job-runner", self._pass, poll_s, min_pause_s=min(poll_s, MIN_PASS_INTERVAL_S)
        )

    # ---- operations --------------------------------------------------------------------------

    async def start_job(self, profile_id: str) -> JobView:
        await self.profiles.require(profile_id)
        now = utcnow()
        job_id = f"job_{uuid.uuid4().hex[:16]}"
        total = await self.mailboxes.count_for_profile(profile_id)
        started = TestJobStarted(job_id=job_id, profile_id=profile_id, total=total, started_at=now)
        job = JobDoc(
            id=job_id,
            profile_id=profile_id,
            total=total,
            created_at=now,
            created_by=current_actor() or "",
            lease_owner=self.instance,  # the starter expands it first (see jobexpansion.py)
            lease_until=now + timedelta(seconds=LEASE_S),
        )
        started_env = self.envelop(started)
        await self.jobs.insert(job, [outbox_entry(started_env)])
        self.wake_relay()
        # Also published now, before any progress (published straight, not through the relay), so
        # subscribers see it first; the relay's copy has the same id and is dropped by JetStream.
        try:
            await self.publish(started_env)
        except Exception:
            log.warning("job start event left to the relay", extra={"job_id": job_id}, exc_info=True)
        self.wake()
        log.info("job started", extra={"job_id": job_id, "profile_id": profile_id, "total": total})
        return await self.view(job)

    async def get(self, job_id: str) -> JobView:
        job = await self._job(job_id)
        if job is None:
            raise DomainError(404, "no such job", "job_id")
        return await self.view(job)

    async def _job(self, job_id: str) -> JobDoc | None:
        """The job as far as it has expanded (its document and its batch records)."""
        job = await self.jobs.get(job_id)
        return None if job is None else await self.expansions.apply(job)

    async def cancel(self, job_id: str) -> JobView:
        job = await self._job(job_id)
        if job is None:
            raise DomainError(404, "no such job", "job_id")
        if job.state != "running":
            raise DomainError(409, f"the job is {job.state}", "job_id")
        done = await self._finish(job, "cancelled")
        if done is None:
            return await self.get(job_id)
        return await self.view(await self.expansions.apply(done))

    async def view(self, job: JobDoc) -> JobView:
        # A cancelled job keeps counting the tests that had started; only a completed one is final.
        progress = job.summary if job.state == "completed" else None
        if progress is None:
            progress = await self._progress(job)
        return JobView(
            job_id=job.id,
            profile_id=job.profile_id,
            state=job.state,
            created_at=job.created_at,
            finished_at=job.finished_at,
            **progress.model_dump(),
        )

    async def _results(self, job: JobDoc, exact: bool = False, fresh: bool = False) -> dict[str, int]:
        """The job's results per outcome, counted from its stored runs (jobresults.py), not kept
        in the job document: a running job is not written while its results arrive.

        A look reads only the runs stored since the last one; a job that stays behind its
        requests with nothing new for RECONCILE_AFTER_S is counted again from every stored run
        (a batch stored long after it was received, e.g. through a database outage).
        """
        if not exact and self.results.quiet_for(job.id) >= RECONCILE_AFTER_S:
            exact = sum((await self.results.of(job.id)).values()) < job.requested
        return await self.results.of(job.id, exact=exact, fresh=fresh)

    async def _progress(self, job: JobDoc, exact: bool = False, fresh: bool = False) -> JobProgress:
        failed = await self._results(job, exact, fresh)
        succeeded = failed.pop("success", 0)
        done = succeeded + sum(failed.values())
        return JobProgress(
            total=max(job.total, job.requested + sum(job.refused.values())),
            requested=job.requested,
            done=min(done, job.requested),
            succeeded=succeeded,
            failed=failed,
            refused=job.refused,
        )

    async def _complete(self, job: JobDoc) -> JobDoc | None:
        """Close a job whose results are all stored, once each of them is applied to its mailbox.

        A stored run counts as done, but its handler may have given up before the mailbox update
        (a database outage longer than its retries): such results are applied first, so a
        completed job never leaves a mailbox behind. If that fails, the job stays running and
        the next pass tries again. Only the mailboxes not known here to have taken the job's
        test are read, when this process expanded the whole job (jobsweep.py).
        """
        await self.apply_stored(
            job.id, job.profile_id, self.sweeps.scope(job.id, self.expansions.seq(job.id))
        )
        return await self._finish(job, "completed")

    async def _finish(self, job: JobDoc, state: JobState) -> JobDoc | None:
        """Close a running job with its summary event; only one caller wins."""
        progress = await self._progress(job, exact=True)
        now = utcnow()
        summary = TestJobCompleted(
            job_id=job.id,
            profile_id=job.profile_id,
            state="completed" if state == "completed" else "cancelled",
            progress=progress,
            started_at=job.created_at,
            finished_at=now,
        )
        closed = fields(JobDoc, state=state, finished_at=now, summary=progress, lease_owner=None)
        if state == "cancelled":
            closed |= fields(JobDoc, cancelled_by=current_actor() or "")
        done = await self.jobs.update(JobWrite(job, closed, events=[outbox_entry(self.envelop(summary))]))
        self.queued.forget(job.id)
        self._caps.pop(job.id, None)
        if state == "completed":
            self._forget(job.id)
        if done is not None:
            self.wake_relay()
            log.info("job finished", extra={"job_id": job.id, "state": state})
        return done

    # ---- background work ---------------------------------------------------------------------

    def wake(self, job_id: str | None = None) -> None:
        """A result of ``job_id`` arrived (or there is work): its progress is published soon."""
        if job_id is not None:
            self._moved.add(job_id)
        self._loop.wake()

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def _pass(self) -> bool:
        await self.run_once()
        return False

    async def run_once(self) -> None:
        """Expand what can be expanded now, close jobs whose results are all in, report progress."""
        await self._report_progress()
        running = [await self.expansions.apply(job) for job in await self.jobs.running()]
        for job in running:
            if job.expanded and (await self._progress(job)).done >= job.requested:
                await self._complete(job)
        for job in running:
            if job.expanded:
                continue
            next_job: JobDoc | None = job
            while next_job is not None:
                claimed = await self._claim(next_job)
                # None: done, taken by another replica, or waiting for results (a result wakes us)
                next_job = None if claimed is None else await self._expand(claimed)

    async def _claim(self, job: JobDoc) -> JobDoc | None:
        """The job to expand, or None (done, cancelled, or another replica's lease).

        Nothing is written: the lease is the last batch record's (jobexpansion.py), so a job
        another replica expanded less than LEASE_S ago is left to it; :meth:`_expand` checks
        the room and records the batch, and of two replicas expanding the same one, one does.
        """
        if job.state != "running" or job.expanded:
            return None
        held = job.lease_owner not in (None, self.instance)
        if held and job.lease_until is not None and job.lease_until > utcnow():
            return None
        return job

    def taken(self, job_id: str, mailbox_ids: list[str]) -> None:
        """These mailboxes applied the job's test (a result handler here): the closing sweep
        need not read them (jobsweep.py)."""
        self.sweeps.taken(job_id, mailbox_ids)

    def count(self, results: dict[str, dict[str, int]]) -> None:
        """Newly stored results (job id -> outcome -> how many): their jobs' progress is published
        soon (at most once a second per job); the counts themselves are read from the stored runs."""
        for job_id in results:
            self.wake(job_id)

    async def _report_progress(self) -> None:
        """A TestJobProgress for each job with results stored here, when what it shows changed, at
        most one per job every PROGRESS_EVERY_S; nothing is written to the job.

        Subscribers then see what ``GET /jobs/{id}`` shows, also for a cancelled job whose started
        tests finish. Published straight to JetStream, its id derived from what it says (two
        replicas reporting the same progress publish one event); a lost one is followed by the
        next, or by the summary, which the job's closing write carries. A job not reported now
        (too soon) stays marked, and the loop comes back.
        """
        moved, self._moved = self._moved, set()
        now = time.monotonic()
        for job_id in moved:
            sent = self._sent.get(job_id)
            if sent is not None and now - sent[0] < PROGRESS_EVERY_S:
                self._moved.add(job_id)
                self._loop.wake()  # come back once the second is over
                continue
            job = await self._job(job_id)
            if job is None or job.state == "completed":
                self._forget(job_id)
                continue  # the summary said it all
            await self._publish_progress(job, await self._progress(job, fresh=True))

    async def _publish_progress(self, job: JobDoc, progress: JobProgress) -> None:
        """Publish the job's progress unless this process published the same last."""
        sent = self._sent.get(job.id)
        if sent is not None and sent[1] == progress:
            return
        event = TestJobProgress(job_id=job.id, profile_id=job.profile_id, state=job.state, progress=progress)
        said = f"mailwarden-job-progress:{job.id}:{job.state}:{progress.model_dump_json()}"
        env = self.envelop(event).model_copy(update={"id": uuid.uuid5(uuid.NAMESPACE_URL, said)})
        try:
            await self.publish(env)
        except Exception:
            log.warning("job progress not published", extra={"job_id": job.id}, exc_info=True)
            return  # a notice: the next one (or the summary) says it
        self._sent[job.id] = (time.monotonic(), progress)

    def _forget(self, job_id: str) -> None:
        self._sent.pop(job_id, None)
        self.results.forget(job_id)
        self.expansions.forget(job_id)
        self.sweeps.forget(job_id)

    def in_flight_cap(self, profile: ProfileSnapshot | None) -> int:
        """Tests of one job without a result: what its servers can take, twice, at most ``max_in_flight``.

        The profile's servers run at most ``max_concurrent_connections`` at once, so more in the
        testers' queue only waits; a dead or slow server's job then holds a short queue, not one
        that unrelated tests wait behind.
        """
        if profile is None:
            return self.max_in_flight
        return min(self.max_in_flight, 2 * profile.advanced.max_concurrent_connections)

    async def _room(self, job: JobDoc, progress: JobProgress) -> int:
        """How many more tests the job may request now (see :meth:`in_flight_cap`)."""
        known = await self.read.get_profile(job.profile_id)  # the read model: its limits
        cap = self.in_flight_cap(known)
        self._caps[job.id] = cap
        return cap - (job.requested - progress.done)

    def _refill(self, job: JobDoc) -> int:
        """The least room worth an expansion: a whole batch, at most half the job's cap, fewer only
        for the job's last mailboxes.

        Refilling whatever a few results freed cost a job update (and a progress event) per pass,
        a few a second; in whole batches it is one per batch of results. Half the cap is still
        queued meanwhile, at least what the profile's servers take at once, so they stay busy.
        """
        cap = self._caps.get(job.id, self.max_in_flight)
        left = job.total - job.requested - sum(job.refused.values())
        return max(1, min(self.batch_size, cap // 2, left))

    async def _expand(self, job: JobDoc) -> JobDoc | None:
        """Request one batch; the job to go on with, or None when done or waiting for results."""
        progress = await self._progress(job)
        room = await self._room(job, progress)
        if room < self._refill(job):
            return None
        ids = await self.queued.next(job, min(room, self.batch_size))
        if not ids:
            self.queued.forget(job.id)
            if await self._record(job, BatchRecord(job.cursor, expanded=True)) is None:
                return None
            if progress.done >= job.requested:
                await self._complete(job)
            return None
        found = await self.mailboxes.get_many(ids)
        # what the ids were read for may have changed meanwhile: only the profile's active mailboxes
        batch = [
            m for i in ids if (m := found.get(i)) is not None and m.profile_id == job.profile_id and m.active
        ]
        settings = await self.read.get_settings()
        try:
            profile = await self.profiles.find(job.profile_id, with_login=True)
        except ProfileUnavailable:
            return None  # not known yet whether it exists: the next pass asks again
        now = utcnow()
        requests: list[Envelope[Any]] = []
        asked: list[str] = []
        refused: dict[str, int] = {}
        for doc in batch:
            test_id = job_test_id(job.id, doc.id)
            try:
                req = build_request(doc, profile, settings, self.rings, now, test_id=test_id, job_id=job.id)
            except TestRefused as exc:
                refused[exc.code] = refused.get(exc.code, 0) + 1
                continue
            event_id = uuid.uuid5(uuid.NAMESPACE_URL, f"mailwarden-test-requested:{test_id}")
            requests.append(self.envelop(req).model_copy(update={"id": event_id}))
            asked.append(doc.id)
        self.sweeps.requesting(job.id, asked)
        sent = await asyncio.gather(*(self.publish(env) for env in requests), return_exceptions=True)
        if failed := next((r for r in sent if isinstance(r, BaseException)), None):
            raise failed  # the cursor stays: the next pass publishes the batch again (de-duplicated)
        updated = await self._record(job, BatchRecord(ids[-1], len(requests), refused))
        if updated is not None:
            await self._publish_progress(updated, await self._progress(updated))
        return updated

    async def _record(self, job: JobDoc, batch: BatchRecord) -> JobDoc | None:
        """Append the job's next batch record; the job after it, or None when another replica
        recorded that batch first, or the job is no longer running (the next pass reads it again)."""
        record = JobBatchDoc(
            id=JobBatchDoc.key(job.id, self.expansions.seq(job.id) + 1),
            job_id=job.id,
            seq=self.expansions.seq(job.id) + 1,
            cursor=batch.cursor,
            requested=batch.requested,
            refused=dict(batch.refused),
            expanded=batch.expanded,
            by=self.instance,
            at=utcnow(),
        )
        if not await self.jobs.record_batch(record):
            return None
        self.sweeps.recorded(job.id, record.seq)
        updated = await self._job(job.id)
        return updated if updated is not None and updated.state == "running" else None
