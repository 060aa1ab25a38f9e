"""One conditional write of a job (``JobWrite``): what jobs.py decides, built from the job's model."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from mailbox_svc.documents import JobDoc
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.outbox import OutboxEntry, with_outbox


@dataclass(frozen=True, slots=True)
class JobWrite:
    """One write of a job as it was read (``job``): the fields it sets, as stored (built with
    ``documents.fields(JobDoc, ...)``), and its events in the same write (outbox).

    A job is written when it ends (completed or cancelled); its expansion is batch records
    (jobexpansion.py) and its results are its stored runs (jobresults.py). The write applies only
    while the job is still in the state read (and its ``unchanged`` fields hold the values read):
    of two replicas, or a cancel and a completion, one wins.
    """

    job: JobDoc
    fields: Document
    events: Sequence[OutboxEntry] = ()
    unchanged: Collection[str] = ()

    def query(self) -> Document:
        return {"_id": self.job.id} | self.job.stored(include={"state", *self.unchanged})

    def update(self) -> Document:
        return with_outbox({"$set": self.fields}, self.events)
