"""How far a job has expanded: its batch records laid over its document (issue #16).

Moving the job's cursor, counts and lease in its document cost an update per expanded batch (and
per lease renewal), the only updates a test caused besides its mailbox's status. Each batch is
now an inserted record (``JobBatchDoc``: cursor, requested, refused, who and when), appended once
its TestRequested events are stored; the unique ``<job>/<seq>`` id is the condition two replicas
met on the cursor before. The lease is the last record's: its instance holds the job for
``lease_s`` after it, so another replica takes over a job only when it has not moved for that long.

A process keeps each running job's fold and reads only the records after the last it saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mailbox_svc.documents import JobBatchDoc, JobDoc
from mailbox_svc.store.jobs import JobStore

MAX_JOBS = 256  # jobs whose fold a process keeps at once (running jobs are few; others are read again)


@dataclass
class _Fold:
    seq: int = 0
    cursor: str | None = None
    requested: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    expanded: bool = False
    by: str | None = None
    at: datetime | None = None

    def add(self, batch: JobBatchDoc) -> None:
        if batch.seq <= self.seq:
            return  # added by a look that ran alongside (an API read during a pass)
        self.seq = batch.seq
        self.cursor = batch.cursor
        self.requested += batch.requested
        for reason, n in batch.refused.items():
            self.refused[reason] = self.refused.get(reason, 0) + n
        self.expanded = self.expanded or batch.expanded
        self.by, self.at = batch.by, batch.at


class JobExpansions:
    def __init__(self, jobs: JobStore, lease_s: float) -> None:
        self.jobs = jobs
        self.lease = timedelta(seconds=lease_s)
        self._folds: dict[str, _Fold] = {}

    async def apply(self, job: JobDoc) -> JobDoc:
        """``job`` as far as it has expanded: its document's fields plus every batch record."""
        fold = self._folds.get(job.id) or _Fold()
        for batch in await self.jobs.batches_after(job.id, fold.seq):
            fold.add(batch)
        self._keep(job.id, fold)
        if fold.seq == 0:
            return job
        refused = dict(job.refused)
        for reason, n in fold.refused.items():
            refused[reason] = refused.get(reason, 0) + n
        assert fold.at is not None
        return job.model_copy(
            update={
                "cursor": fold.cursor,
                "requested": job.requested + fold.requested,
                "refused": refused,
                "expanded": job.expanded or fold.expanded,
                "lease_owner": fold.by,
                "lease_until": fold.at + self.lease,
            }
        )

    def seq(self, job_id: str) -> int:
        """The last batch record of the job seen by :meth:`apply` (0: none)."""
        fold = self._folds.get(job_id)
        return 0 if fold is None else fold.seq

    def forget(self, job_id: str) -> None:
        self._folds.pop(job_id, None)

    def _keep(self, job_id: str, fold: _Fold) -> None:
        if job_id not in self._folds and len(self._folds) >= MAX_JOBS:
            self._folds.pop(next(iter(self._folds)))
        self._folds[job_id] = fold
