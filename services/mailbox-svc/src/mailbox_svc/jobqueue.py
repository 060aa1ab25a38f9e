"""Which mailboxes a job expands next: the profile's ids read once per job, then taken in order.

Asking the database for "the next 100 active mailboxes of the profile after the cursor" costs a
read of every mailbox of the profile on the embedded server (it scans for a range query and
sorts), once per batch: O(N²) per job, 220 ms of server CPU per batch at 10,000 mailboxes. Here
the ordered ids past the job's cursor are read once, and each batch is read by id (19 ms). The
job document stays the truth: a cursor moved by another replica, or a restart, reads the ids
again, and when the list runs out it is read once more, so mailboxes created meanwhile are
still tested, as before.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from mailbox_svc.documents import JobDoc
from mailbox_svc.store.mailboxes import MailboxStore

MAX_JOBS = 64  # jobs whose ids are kept at once (running jobs are few; the rest are read again)


@dataclass(frozen=True)
class _Pending:
    after: str | None  # the job cursor these ids follow
    ids: list[str]  # in order
    fresh: bool  # read from the database for this cursor (an empty fresh list: nothing left)


class JobMailboxIds:
    def __init__(self, mailboxes: MailboxStore) -> None:
        self.mailboxes = mailboxes
        self._jobs: dict[str, _Pending] = {}

    async def next(self, job: JobDoc, n: int) -> list[str]:
        """Up to ``n`` ids after the job's cursor, in id order; [] when the job has expanded."""
        entry = self._jobs.get(job.id)
        if entry is not None and entry.after != job.cursor:
            moved_on = job.cursor is not None and (entry.after is None or job.cursor > entry.after)
            if moved_on:
                assert job.cursor is not None
                entry = _Pending(job.cursor, entry.ids[bisect_right(entry.ids, job.cursor) :], fresh=False)
            else:
                entry = None
        if entry is None or (not entry.ids and not entry.fresh):
            ids = await self.mailboxes.job_mailbox_ids(job.profile_id, job.cursor)
            entry = _Pending(job.cursor, ids, fresh=True)
        if job.id not in self._jobs and len(self._jobs) >= MAX_JOBS:
            self._jobs.clear()
        self._jobs[job.id] = entry
        return entry.ids[:n]

    def forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)
