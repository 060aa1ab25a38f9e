"""A job's results, counted from its stored runs when asked, never written to the job (issue #16).

Writing counters into the job document cost an update every second of a job's run: the only
update a test caused besides its mailbox's status. The runs are stored anyway (run batches, under
the ``runs.job_id, received_at`` index), so a process counts a job's runs once and then, at most
every ``REFRESH_S``, reads only the batches received since its last look (less ``SKEW_S``: a batch
is stamped before it is stored), adding those it has not counted, by batch id. A stored batch
never changes and holds each run once, so nothing is counted twice; a look costs ~2 ms of the
embedded database's CPU at 10,000 runs (the whole count ~150 ms), flat with the job's size.

A batch stored more than ``SKEW_S`` after its stamp (a handler retrying through a database outage)
is missed until the next exact count, which the runner asks for when a job stays behind (jobs.py)
and before it closes a job. An exact count of a job already counted here does not count its runs
again (that cost ~150 ms of the database's CPU at 10,000 runs, at the job's end: issue #16's
"flat with size"): it lists the ids of the job's run batches (ids only, ~1/6 of that) and reads
the results of only those not counted yet. Every batch counted is remembered by id, so the sum
is the count over every stored batch, as exact as a recount.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mailbox_svc.store.runs import JobResultBatch, RunStore

REFRESH_S = 1.0
SKEW_S = 5.0
MAX_JOBS = 256  # jobs whose counts a process keeps at once (running jobs are few; others recount)
SKEW = timedelta(seconds=SKEW_S)


@dataclass
class _Tally:
    counts: dict[str, int] = field(default_factory=dict)
    counted: set[str] = field(default_factory=set)
    """Every batch counted, by id (a stored batch never changes: each is counted once)."""
    newest: datetime | None = None
    looked_at: float = 0.0
    moved_at: float = 0.0
    """When the counts last grew or were counted exactly (monotonic): how long a job has been quiet."""

    def add(self, batches: list[JobResultBatch], now: float) -> None:
        for batch in batches:
            if batch.id in self.counted:
                continue  # counted by an earlier look
            self.counted.add(batch.id)
            for outcome, n in batch.outcomes.items():
                self.counts[outcome] = self.counts.get(outcome, 0) + n
            self.moved_at = now
            if self.newest is None or batch.received_at > self.newest:
                self.newest = batch.received_at
        self.looked_at = now


class JobResults:
    """Per job: outcome -> how many stored runs (withdrawn ones not counted), as this process last looked."""

    def __init__(self, runs: RunStore) -> None:
        self.runs = runs
        self._tallies: dict[str, _Tally] = {}

    async def of(self, job_id: str, exact: bool = False, fresh: bool = False) -> dict[str, int]:
        """The job's results; ``fresh``: looking now even within REFRESH_S of the last look (for a
        progress event, itself at most one a second); ``exact``: every stored run counted (the
        first count here counts them all; later ones list the job's batch ids and read the results
        of only those not counted yet)."""
        now = time.monotonic()
        tally = self._tallies.get(job_id)
        if tally is None:
            counted = _Tally(moved_at=now)  # quiet from here: one exact count per quiet spell at most
            counted.add(await self.runs.job_result_batches(job_id, None), now)
            self._keep(job_id, counted)
            return dict(counted.counts)
        if exact:
            missing = await self.runs.job_run_batch_ids(job_id) - tally.counted
            if missing:
                tally.add(await self.runs.job_result_batches(job_id, None, ids=missing), now)
                tally.counted |= missing  # those without a countable run (withdrawn) never get one
            tally.moved_at = now
            return dict(tally.counts)
        if fresh or now - tally.looked_at >= REFRESH_S:
            since = None if tally.newest is None else tally.newest - SKEW
            tally.add(await self.runs.job_result_batches(job_id, since), now)
        return dict(tally.counts)

    def quiet_for(self, job_id: str) -> float:
        """Seconds since the job's counts last grew or were counted exactly here (0: not counted yet)."""
        tally = self._tallies.get(job_id)
        return 0.0 if tally is None else time.monotonic() - tally.moved_at

    def forget(self, job_id: str) -> None:
        self._tallies.pop(job_id, None)

    def _keep(self, job_id: str, tally: _Tally) -> None:
        if job_id not in self._tallies and len(self._tallies) >= MAX_JOBS:
            self._tallies.pop(next(iter(self._tallies)))
        self._tallies[job_id] = tally
