"""The Test & Enable jobs: one document each (``jobs``) and their expanded batches (``job_batches``,
one inserted document each, ``_id`` ``<job>/<seq>``)."""

from __future__ import annotations

from datetime import datetime

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from mailbox_svc.documents import CancelledJob, JobBatchDoc, JobDoc
from mailbox_svc.jobwrite import JobWrite
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.outbox import OutboxEntry, new_document_outbox

JOBS = "jobs"
JOB_BATCHES = "job_batches"


class JobStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.jobs: AsyncCollection[Document] = db[JOBS]
        self.batches: AsyncCollection[Document] = db[JOB_BATCHES]

    async def ensure_indexes(self) -> None:
        await self.jobs.create_index("state")

    async def cancelled_at(self, job_ids: set[str]) -> dict[str, datetime]:
        """When each of these jobs was cancelled (only the cancelled ones)."""
        if not job_ids:
            return {}
        q = {"_id": {"$in": sorted(job_ids)}, "state": "cancelled"}
        docs = await self.jobs.find(q, {"finished_at": 1}).to_list(None)
        return {job.id: job.finished_at for job in map(CancelledJob.model_validate, docs)}

    async def insert(self, job: JobDoc, entries: list[OutboxEntry]) -> None:
        await self.jobs.insert_one({**job.stored(), **new_document_outbox(entries)})

    async def get(self, job_id: str) -> JobDoc | None:
        return _job(await self.jobs.find_one({"_id": job_id}, {"outbox": 0}))

    async def update(self, write: JobWrite) -> JobDoc | None:
        """Apply ``write``; the job as it is then, or None when it no longer holds (another won)."""
        return _job(
            await self.jobs.find_one_and_update(
                write.query(), write.update(), projection={"outbox": 0}, return_document=ReturnDocument.AFTER
            )
        )

    async def running(self) -> list[JobDoc]:
        docs = await self.jobs.find({"state": "running"}, {"outbox": 0}).to_list(None)
        return [JobDoc.model_validate(d) for d in docs]

    async def record_batch(self, batch: JobBatchDoc) -> bool:
        """Insert a job's batch record; False when that batch is recorded already (another replica)."""
        try:
            await self.batches.insert_one(batch.stored())
        except DuplicateKeyError:
            return False
        return True

    async def batches_after(self, job_id: str, seq: int) -> list[JobBatchDoc]:
        """The job's batch records after ``seq``, in order (a range of ``_id``: ``/`` < digits < ``~``)."""
        q = {"_id": {"$gt": JobBatchDoc.key(job_id, seq), "$lt": f"{job_id}/~"}}
        docs = await self.batches.find(q).sort("_id", 1).to_list(None)
        return [JobBatchDoc.model_validate(d) for d in docs]


def _job(doc: Document | None) -> JobDoc | None:
    return None if doc is None else JobDoc.model_validate(doc)
