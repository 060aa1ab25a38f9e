"""Which mailboxes a job's closing sweep still has to read (issue #16, "flat with size").

Before a job completes, its results whose run is stored but whose mailbox never took them (a
handler that gave up through a database outage) are applied (``Handlers.apply_stored``). Finding
them read every mailbox of the profile at the job's end: 238-305 ms of the embedded database's
CPU at 10,000 mailboxes (a range of ``_id``, even a small one, costs SecantusDB as much). Here the
process that expands a job remembers the mailboxes it requested a test of, and its result
handlers tell it which mailboxes took their job's test (the mailbox's last applied test became
it). Such a mailbox is done for the job: a later test supersedes the job's, and a superseded
result never applies (``handlers.applies``), so the whole read would find nothing to apply there.
The close then reads only the others by id (none when every handler applied its result here),
and applies exactly what the whole read would have. Nothing is written. When this process did
not record every batch of the job (another replica expanded some, or it restarted), or too many
are left, the close reads every mailbox of the profile as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

MAX_JOBS = 256  # jobs looked after at once (running jobs are few; the others are swept whole)
MAX_LEFT = 2_000  # more left than this: one read of the whole profile is cheaper than by id


@dataclass(frozen=True, slots=True)
class SweepScope:
    """The mailboxes a job's closing sweep reads, by id (the rest took the job's test)."""

    ids: frozenset[str]


@dataclass
class _Job:
    seqs: set[int] = field(default_factory=set)  # the job's batch records written by this process
    requested: set[str] = field(default_factory=set)  # mailboxes a test was published for, here
    taken: set[str] = field(default_factory=set)  # mailboxes that took the job's test, here


class JobSweeps:
    def __init__(self) -> None:
        self._jobs: dict[str, _Job] = {}

    def requesting(self, job_id: str, mailbox_ids: Iterable[str]) -> None:
        """Tests of the job are about to be published for these mailboxes (by this process)."""
        self._job(job_id).requested.update(mailbox_ids)

    def recorded(self, job_id: str, seq: int) -> None:
        """This process wrote the job's batch record ``seq``."""
        self._job(job_id).seqs.add(seq)

    def taken(self, job_id: str, mailbox_ids: Iterable[str]) -> None:
        """These mailboxes applied the job's test (a result handler of this process)."""
        job = self._jobs.get(job_id)
        if job is not None:
            job.taken.update(mailbox_ids)

    def scope(self, job_id: str, seq: int) -> SweepScope | None:
        """What the closing sweep of the job, whose last batch record is ``seq``, must read;
        None: every mailbox of the profile."""
        job = self._jobs.get(job_id)
        if job is None or job.seqs != set(range(1, seq + 1)):
            return None
        left = job.requested - job.taken
        return None if len(left) > MAX_LEFT else SweepScope(frozenset(left))

    def forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    def _job(self, job_id: str) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            if len(self._jobs) >= MAX_JOBS:
                self._jobs.pop(next(iter(self._jobs)))
            job = self._jobs[job_id] = _Job()
        return job
