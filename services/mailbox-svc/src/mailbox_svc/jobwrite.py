"""One conditional write of a job (``JobWrite``): what jobs.py decides, built from the job's model."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from mailbox_svc.documents import JobDoc
from mailwarden_runtime.documents import under
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.outbox import OutboxEntry, with_outbox


@dataclass(frozen=True, slots=True)
class JobCounts:
    """Counters a write adds to a job (``$inc``): so two replicas' counts add up, never overwrite."""

    requested: int = 0
    refused: Mapping[str, int] = field(default_factory=dict)
    """Per reason a mailbox could not be tested."""

    def inc(self) -> Document:
        requested = {"requested": self.requested} if self.requested else {}
        return requested | under("refused", dict(self.refused))


@dataclass(frozen=True, slots=True)
class JobWrite:
    """One write of a job as it was read (``job``): the fields it sets, as stored (built with
    ``documents.fields(JobDoc, ...)``), the counters it adds, its events in the same write (outbox).

    It applies only while the job is still in the state read and its ``unchanged`` fields still
    hold the values read (the expansion's cursor): of two replicas, or a cancel and a pass, one wins.
    """

    job: JobDoc
    fields: Document
    added: JobCounts | None = None
    events: Sequence[OutboxEntry] = ()
    unchanged: Collection[str] = ()

    def query(self) -> Document:
        return {"_id": self.job.id} | self.job.stored(include={"state", *self.unchanged})

    def update(self) -> Document:
        update: Document = {"$set": self.fields}
        if self.added is not None and (inc := self.added.inc()):
            update["$inc"] = inc
        return with_outbox(update, self.events)
