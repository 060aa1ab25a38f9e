"""All MongoDB access of mailbox-svc: mailboxes, test runs and jobs, and the read model of profiles and settings."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pymongo import ASCENDING, DESCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from contracts.events import TestCompleted
from contracts.models import DeliveryMethod, SealedSecret
from mailbox_svc.documents import JobBatchDoc, JobDoc, MailboxDoc, MailboxEmail, SealedLogins, TestRunDoc
from mailbox_svc.jobwrite import JobWrite
from mailbox_svc.models import MailboxFilter
from mailwarden_runtime.documents import fields
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.outbox import OutboxEntry, new_document_outbox, with_outbox
from mailwarden_runtime.readmodels import ReadModels

MAILBOXES = "mailboxes"
WITHDRAWN = "withdrawn"  # the outcome of a cancelled job's test that never started
TEST_RUNS = "test_runs"  # before session 6: one document per run, moved into run batches at start
RUN_BATCHES = "test_run_batches"
SYNC_PAUSED = "sync_paused"  # one small document per mailbox whose sync an operator paused
SYNCED = DeliveryMethod.SERVER_SIDE_SYNC.value
JOBS = "jobs"
JOB_BATCHES = "job_batches"
OUTBOX_COLLECTIONS = (MAILBOXES, JOBS)
DUPLICATE_KEY = 11000
RECORD_ATTEMPTS = 5
LEGACY_CHUNK = 500
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # before any retry time: the lower end of the due range
PENDING_APPROVAL_INDEX = "approval_pending"
DUE_INDEX = "next_retry_at_due"


def filter_query(f: MailboxFilter) -> Document:
    q: Document = {}
    for name in ("profile_id", "approval", "incoming_status", "outgoing_status", "active"):
        value = getattr(f, name)
        if value is not None:
            q[name] = value.value if hasattr(value, "value") else value
    if f.owner_kind is not None:
        q["owner.kind"] = f.owner_kind.value
    if f.owner_id is not None:
        q["owner.id"] = f.owner_id
    if f.enabled is not None:
        q["$or" if f.enabled else "$and"] = (
            [{"enabled_incoming": True}, {"enabled_outgoing": True}]
            if f.enabled
            else [{"enabled_incoming": False}, {"enabled_outgoing": False}]
        )
    return q


@dataclass(frozen=True, slots=True)
class MailboxWrite:
    """One write of a mailbox as it was read (``doc``): the fields it sets, as stored (built from
    the model: ``documents.changes``, ``documents.fields``), the version moved on, its events in
    the same write (outbox). It applies only while the mailbox is still at the version read and
    its ``unchanged`` fields still hold the values read (e.g. the pending test it was decided on)."""

    doc: MailboxDoc
    fields: Document
    events: Sequence[OutboxEntry] = ()
    unchanged: Collection[str] = ()
    updated_at: datetime | None = None
    """When it was made: written as the mailbox's ``updated_at`` too."""
    versioned: bool = True
    """False: bookkeeping that leaves the version as it is, so no versioned write loses a race to it."""

    def query(self) -> Document:
        q: Document = {"_id": self.doc.id, "version": self.doc.version}
        return q | self.doc.stored(include=self.unchanged) if self.unchanged else q

    def update(self) -> Document:
        fields = self.fields if self.updated_at is None else self.fields | {"updated_at": self.updated_at}
        update: Document = {"$set": fields}
        if self.versioned:
            update["$inc"] = {"version": 1}
        return with_outbox(update, self.events)


@dataclass(frozen=True, slots=True)
class RetestFilter:
    """Mailboxes due a scheduled re-test (``retests.py``): active, idle (no test pending or
    scheduled), last tested before ``cutoff``, and enabled in a direction nothing exercises."""

    cutoff: datetime
    skip: Collection[str] = ()
    """Left out (they could not be tested)."""
    paused: Sequence[str] | None = None
    """None: those not synchronized continuously; else those of these whose incoming sync (enabled)
    an operator paused."""

    def query(self) -> Document:
        idle: Document = {
            "active": True,
            "pending_test_id": None,
            "next_retry_at": None,
            "last_test_completed_at": {"$lte": self.cutoff},
        }
        if self.paused is not None:
            skip = set(self.skip)
            return idle | {
                "_id": {"$in": [m for m in self.paused if m not in skip]},
                "enabled_incoming": True,
            }
        if self.skip:
            idle["_id"] = {"$nin": list(self.skip)}
        return idle | {
            "$and": [
                {"$or": [{"enabled_incoming": True}, {"enabled_outgoing": True}]},
                {"$or": [{"enabled_incoming": False}, {"incoming_delivery": {"$ne": SYNCED}}]},
            ]
        }


class Repository:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self.mailboxes = db[MAILBOXES]
        self.read = ReadModels(db)
        """Profiles and the org's settings, kept from profile-svc's events (``readmodels.follow``)."""
        self.runs = db[RUN_BATCHES]
        """Test runs stored per result batch: one document (``_id``, ``received_at``, ``runs``) holds
        the runs of the results handled together, at most one per mailbox. A test writes no
        document of its own (the batch is ~1/100 of one), and the runs stay append-only."""
        self.sync_paused = db[SYNC_PAUSED]
        self.jobs = db[JOBS]
        self.job_batches = db[JOB_BATCHES]
        """A job's expanded batches, one inserted document each (``_id`` ``<job>/<seq>``)."""

    async def ensure_indexes(self) -> None:
        for name in ("profile_id", "owner.id"):
            await self.mailboxes.create_index(name)
        # Every index costs each insert and update of a mailbox its bookkeeping (SecantusDB: 0.34 ms
        # of CPU per inserted mailbox with five indexes, 0.22 with two). No query finds a mailbox by
        # its pending test alone (always with its _id); the status filters of the list are not
        # selective enough to pay for it on every test result (a page of 10,000 scans ~0.2 s).
        # Two are partial, holding only what their searches look for: the mailboxes waiting for
        # approval (an approved one, e.g. created approved in bulk, writes no entry) and those with
        # a retry or watchdog time (a test's result clearing it writes none); bench.insert_cost.
        for old in (
            "pending_test_id_1",
            "incoming_status_1",
            "outgoing_status_1",
            "approval_1",
            "next_retry_at_1",
        ):
            with contextlib.suppress(OperationFailure):
                await self.mailboxes.drop_index(old)
        await self.mailboxes.create_index(
            "approval", name=PENDING_APPROVAL_INDEX, partialFilterExpression={"approval": "pending"}
        )
        await self.mailboxes.create_index(
            "next_retry_at", name=DUE_INDEX, partialFilterExpression={"next_retry_at": {"$gte": EPOCH}}
        )
        # Multikey indexes over the runs: a run's test id is unique across every batch (a
        # redelivered result is not stored twice), a mailbox's history and a job's runs are found
        # by index. Each run costs the same three index entries as its own document did.
        await self.runs.create_index("runs._id", unique=True)
        await self.runs.create_index([("runs.mailbox_id", ASCENDING), ("received_at", DESCENDING)])
        # A job's runs by received_at too: its results are counted when read, each look reading only
        # the batches received since the last one (jobresults.py), flat with the job's size.
        with contextlib.suppress(OperationFailure):
            await self.runs.drop_index("runs.job_id_1")
        await self.runs.create_index([("runs.job_id", ASCENDING), ("received_at", ASCENDING)])
        await self._move_legacy_runs()
        await self.jobs.create_index("state")

    # ---- mailboxes ---------------------------------------------------------------------------

    async def insert(self, doc: MailboxDoc, entries: list[OutboxEntry]) -> bool:
        """Store a new mailbox with its first events; False when the id is taken."""
        try:
            await self.mailboxes.insert_one({**doc.stored(), **new_document_outbox(entries)})
        except DuplicateKeyError:
            return False
        return True

    async def insert_many(self, docs: list[tuple[MailboxDoc, list[OutboxEntry]]]) -> None:
        await self.mailboxes.insert_many(
            [{**doc.stored(), **new_document_outbox(entries)} for doc, entries in docs], ordered=True
        )

    async def existing_ids(self, ids: list[str]) -> list[str]:
        found = await self.mailboxes.find({"_id": {"$in": ids}}, {"_id": 1}).to_list(None)
        return [d["_id"] for d in found]

    async def get(self, mailbox_id: str) -> MailboxDoc | None:
        doc = await self.mailboxes.find_one({"_id": mailbox_id}, {"outbox": 0, "outbox_pending": 0})
        return None if doc is None else MailboxDoc.model_validate(doc)

    async def get_many(self, mailbox_ids: list[str]) -> dict[str, MailboxDoc]:
        cursor = self.mailboxes.find({"_id": {"$in": mailbox_ids}}, {"outbox": 0, "outbox_pending": 0})
        return {d["_id"]: MailboxDoc.model_validate(d) for d in await cursor.to_list(None)}

    async def page(self, f: MailboxFilter, limit: int, after: str | None) -> list[MailboxDoc]:
        q = filter_query(f)
        if after is not None:
            q["_id"] = {"$gt": after}
        cursor = self.mailboxes.find(q, {"outbox": 0}).sort("_id", ASCENDING).limit(limit)
        return _mailboxes(await cursor.to_list(None))

    async def select_ids(self, f: MailboxFilter, limit: int) -> list[str]:
        docs = (
            await self.mailboxes.find(filter_query(f), {"_id": 1}).sort("_id", 1).limit(limit).to_list(None)
        )
        return [d["_id"] for d in docs]

    async def update(self, write: MailboxWrite) -> MailboxDoc | None:
        """Optimistic update: applies only if the mailbox is still as read; returns the new document."""
        doc = await self.mailboxes.find_one_and_update(
            write.query(), write.update(), projection={"outbox": 0}, return_document=ReturnDocument.AFTER
        )
        return None if doc is None else MailboxDoc.model_validate(doc)

    async def update_if(self, write: MailboxWrite) -> bool:
        """Like :meth:`update` without reading the document back (cheaper on slow servers)."""
        return (await self.mailboxes.update_one(write.query(), write.update())).modified_count == 1

    async def bulk_update(self, writes: Sequence[MailboxWrite]) -> int:
        """Each write as :meth:`update_if`, in one round trip; returns how many applied."""
        if not writes:
            return 0
        ops = [UpdateOne(w.query(), w.update()) for w in writes]
        return (await self.mailboxes.bulk_write(ops, ordered=False)).modified_count

    async def job_mailbox_ids(self, profile_id: str, after: str | None) -> list[str]:
        """The ids of a profile's active mailboxes after ``after``, in order (see jobqueue.py)."""
        q: Document = {"profile_id": profile_id, "active": True}
        if after is not None:
            q["_id"] = {"$gt": after}
        return [d["_id"] for d in await self.mailboxes.find(q, {"_id": 1}).sort("_id", 1).to_list(None)]

    async def count_for_profile(self, profile_id: str) -> int:
        return await self.mailboxes.count_documents({"profile_id": profile_id, "active": True})

    async def due_retries(self, now: datetime, limit: int) -> list[MailboxDoc]:
        """The longest-due retries first, through the partial ``next_retry_at`` index.

        A range with both ends: SecantusDB serves ``{$gte: EPOCH, $lte: now}`` from the index
        (~1 ms at 10,000 mailboxes) but reads every mailbox for ``{$ne: None, $lte: now}`` or a
        bare ``$lte`` (250-300 ms of its CPU per search, every ``scheduler_poll_s``); the lower
        end is also the index's filter, so the query may use it (MongoDB too).
        """
        q = {"next_retry_at": {"$gte": EPOCH, "$lte": now}}
        found = self.mailboxes.find(q, {"outbox": 0}).sort("next_retry_at", 1).limit(limit)
        return _mailboxes(await found.to_list(None))

    async def due_retests(self, f: RetestFilter, limit: int) -> list[MailboxDoc]:
        """The longest untested first."""
        cursor = self.mailboxes.find(f.query(), {"outbox": 0, "outbox_pending": 0})
        return _mailboxes(await cursor.sort("last_test_completed_at", 1).limit(limit).to_list(None))

    async def set_sync_paused(self, mailbox_id: str, paused: bool, at: datetime) -> None:
        """Remember a mailbox whose sync an operator paused (resumed: forgotten)."""
        if paused:
            await self.sync_paused.update_one({"_id": mailbox_id}, {"$set": {"at": at}}, upsert=True)
        else:
            await self.sync_paused.delete_one({"_id": mailbox_id})

    async def sync_paused_ids(self, limit: int) -> list[str]:
        return [str(d["_id"]) async for d in self.sync_paused.find({}, {"_id": 1}).limit(limit)]

    async def owned(self, user_id: str, mailbox_ids: Collection[str], limit: int) -> list[MailboxEmail]:
        """The mailboxes a user owns and these ones (granted by id), in id order."""
        q: Document = {
            "$or": [{"owner.kind": "user", "owner.id": user_id}, {"_id": {"$in": sorted(mailbox_ids)}}]
        }
        cursor = self.mailboxes.find(q, {"_id": 1, "email": 1}).sort("_id", 1).limit(limit)
        return [MailboxEmail.model_validate(d) async for d in cursor]

    async def all_with_credentials(self, after: str | None, limit: int) -> list[SealedLogins]:
        q: Document = {"credentials": {"$ne": {}}}
        if after is not None:
            q["_id"] = {"$gt": after}
        found = self.mailboxes.find(q, {"credentials": 1}).sort("_id", 1).limit(limit)
        return [SealedLogins.model_validate(d) for d in await found.to_list(None)]

    async def credentials_of(self, mailbox_id: str) -> SealedLogins | None:
        doc = await self.mailboxes.find_one({"_id": mailbox_id}, {"credentials": 1})
        return None if doc is None else SealedLogins.model_validate(doc)

    async def profile_ids_of(self, ids: list[str]) -> set[str]:
        docs = await self.mailboxes.find({"_id": {"$in": ids}}, {"profile_id": 1}).to_list(None)
        return {d["profile_id"] for d in docs if d.get("profile_id")}

    async def swap_credentials(self, old: SealedLogins, new: dict[str, SealedSecret | None]) -> bool:
        """Replace the ciphertexts only if nobody changed them meanwhile (rotation runs online)."""
        res = await self.mailboxes.update_one(
            {"_id": old.id, **old.stored(include={"credentials"})},
            {"$set": fields(SealedLogins, credentials=new)},
        )
        return res.modified_count == 1

    # ---- test runs ---------------------------------------------------------------------------

    async def record_run(self, run: TestRunDoc) -> bool:
        """Store one test run; False when it was already stored (a redelivered result)."""
        return bool(await self.record_runs([run]))

    async def record_runs(self, runs: list[TestRunDoc]) -> list[TestRunDoc]:
        """Store test runs, usually as one batch document in one round trip; returns those stored
        now (not redelivered ones).

        A batch that holds an already stored run is refused whole (the unique ``runs._id``); its
        runs not stored yet are then written without it. Another replica storing the same runs
        meanwhile only repeats that, so the loop is short and never stores a run twice.
        """
        stored: list[TestRunDoc] = []
        pending = runs
        for _ in range(RECORD_ATTEMPTS):
            if not pending:
                return stored
            batches = run_batches(pending)
            try:
                await self.runs.insert_many([b.document() for b in batches], ordered=False)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if any(e.get("code") != DUPLICATE_KEY for e in errors):
                    raise
                refused = {int(e["index"]) for e in errors}
                stored += [r for n, b in enumerate(batches) if n not in refused for r in b.runs]
                again = [r for n in sorted(refused) for r in batches[n].runs]
                known = await self._stored_ids([r.id for r in again])
                pending = [r for r in again if r.id not in known]
                continue
            return stored + pending
        raise RuntimeError("test runs kept colliding with runs stored meanwhile")

    async def _stored_ids(self, test_ids: list[str]) -> set[str]:
        return {run.id for run in await self._runs_of_tests(test_ids)}

    async def _runs_of_tests(self, test_ids: list[str], withdrawn: bool = True) -> list[TestRunDoc]:
        """The stored runs (not their batches) of these tests, found through the ``runs._id``
        index (the first match picks batches, so it may test nothing but the ids)."""
        on_run: dict[str, dict[str, object]] = {"runs._id": {"$in": test_ids}}
        if not withdrawn:
            on_run["runs.outcome"] = {"$ne": WITHDRAWN}
        found = await self.runs.aggregate(
            [{"$match": {"runs._id": {"$in": test_ids}}}, {"$unwind": "$runs"}, {"$match": on_run}]
        )
        return [TestRunDoc.model_validate(d["runs"]) for d in await found.to_list(None)]

    async def last_tests(self, profile_id: str) -> dict[str, str | None]:
        """The last applied test of each of a profile's mailboxes that waits on no test (one read)."""
        query = {"profile_id": profile_id, "pending_test_id": None}
        docs = await self.mailboxes.find(query, {"last_test_id": 1}).to_list(None)
        return {str(d["_id"]): d.get("last_test_id") for d in docs}

    async def runs_by_ids(self, test_ids: list[str]) -> list[TestRunDoc]:
        """The stored runs of these tests (not withdrawn ones)."""
        if not test_ids:
            return []
        return await self._runs_of_tests(test_ids, withdrawn=False)

    async def stored_results(self, test_ids: list[str]) -> dict[str, TestCompleted]:
        """The stored results of these tests (withdrawn ones too), by test id."""
        if not test_ids:
            return {}
        return {run.id: run.result for run in await self._runs_of_tests(test_ids)}

    async def runs_of(self, mailbox_id: str, limit: int) -> list[TestRunDoc]:
        """A mailbox's runs, newest first: its batches newest first, each holding one of its runs."""
        cursor = self.runs.find(
            {"runs.mailbox_id": mailbox_id}, {"runs": {"$elemMatch": {"mailbox_id": mailbox_id}}}
        )
        batches = await cursor.sort("received_at", DESCENDING).limit(limit).to_list(None)
        return [TestRunDoc.model_validate(run) for batch in batches for run in batch["runs"]]

    async def job_results(self, job_id: str) -> dict[str, int]:
        """Exact results of a job per outcome, counted over its stored runs (O(runs): use sparingly)."""
        counted: dict[str, int] = {}
        for batch in await self.job_result_batches(job_id, None):
            for outcome, n in batch.outcomes.items():
                counted[outcome] = counted.get(outcome, 0) + n
        return counted

    async def job_result_batches(
        self, job_id: str, since: datetime | None, ids: Collection[str] | None = None
    ) -> list[JobResultBatch]:
        """The job's results per run batch received at or after ``since`` (None: all), withdrawn
        runs left out; through the ``runs.job_id, received_at`` index, so a look at the last
        seconds reads only their batches (~2 ms at 10,000 runs, the whole job ~150 ms).
        ``ids``: only these batches (by ``_id``)."""
        match: Document = {"runs.job_id": job_id}
        if since is not None:
            match["received_at"] = {"$gte": since}
        if ids is not None:
            match["_id"] = {"$in": list(ids)}
        group = {"b": "$_id", "at": "$received_at", "o": "$runs.outcome"}
        rows = await (
            await self.runs.aggregate(
                [
                    {"$match": match},
                    {"$unwind": "$runs"},
                    {"$match": {"runs.job_id": job_id, "runs.outcome": {"$ne": WITHDRAWN}}},
                    {"$group": {"_id": group, "n": {"$sum": 1}}},
                ]
            )
        ).to_list(None)
        batches: dict[str, JobResultBatch] = {}
        for row in rows:
            key = row["_id"]
            batch = batches.setdefault(str(key["b"]), JobResultBatch(str(key["b"]), key["at"], {}))
            batch.outcomes[str(key["o"])] = int(row["n"])
        return list(batches.values())

    async def job_run_batch_ids(self, job_id: str) -> set[str]:
        """The ids of the run batches holding the job's runs (ids only: ~1/6 of counting them)."""
        found = self.runs.find({"runs.job_id": job_id}, {"_id": 1})
        return {str(d["_id"]) for d in await found.to_list(None)}

    async def _move_legacy_runs(self) -> None:
        """Runs stored one per document (before run batches) move into batches, then the old
        collection goes; a restart midway repeats the copy, and runs already moved are skipped."""
        legacy = self.db[TEST_RUNS]
        if TEST_RUNS not in await self.db.list_collection_names():
            return
        cursor = legacy.find({})
        while chunk := await cursor.to_list(LEGACY_CHUNK):
            await self.record_runs([TestRunDoc.model_validate(run) for run in chunk])
        await legacy.drop()

    # ---- jobs --------------------------------------------------------------------------------

    async def cancelled_at(self, job_ids: set[str]) -> dict[str, datetime]:
        """When each of these jobs was cancelled (only the cancelled ones)."""
        if not job_ids:
            return {}
        q = {"_id": {"$in": sorted(job_ids)}, "state": "cancelled"}
        docs = await self.jobs.find(q, {"finished_at": 1}).to_list(None)
        return {d["_id"]: d["finished_at"] for d in docs}

    async def insert_job(self, job: JobDoc, entries: list[OutboxEntry]) -> None:
        await self.jobs.insert_one({**job.stored(), **new_document_outbox(entries)})

    async def get_job(self, job_id: str) -> JobDoc | None:
        return _job(await self.jobs.find_one({"_id": job_id}, {"outbox": 0}))

    async def update_job(self, write: JobWrite) -> JobDoc | None:
        """Apply ``write``; the job as it is then, or None when it no longer holds (another won)."""
        return _job(
            await self.jobs.find_one_and_update(
                write.query(), write.update(), projection={"outbox": 0}, return_document=ReturnDocument.AFTER
            )
        )

    async def running_jobs(self) -> list[JobDoc]:
        docs = await self.jobs.find({"state": "running"}, {"outbox": 0}).to_list(None)
        return [JobDoc.model_validate(d) for d in docs]

    async def record_job_batch(self, batch: JobBatchDoc) -> bool:
        """Insert a job's batch record; False when that batch is recorded already (another replica)."""
        try:
            await self.job_batches.insert_one(batch.stored())
        except DuplicateKeyError:
            return False
        return True

    async def job_batches_after(self, job_id: str, seq: int) -> list[JobBatchDoc]:
        """The job's batch records after ``seq``, in order (a range of ``_id``: ``/`` < digits < ``~``)."""
        q = {"_id": {"$gt": JobBatchDoc.key(job_id, seq), "$lt": f"{job_id}/~"}}
        docs = await self.job_batches.find(q).sort("_id", 1).to_list(None)
        return [JobBatchDoc.model_validate(d) for d in docs]


@dataclass(frozen=True, slots=True)
class JobResultBatch:
    """One stored run batch's results of one job: its id, when it was received, outcome -> how many."""

    id: str
    received_at: datetime
    outcomes: dict[str, int]


@dataclass(frozen=True, slots=True)
class RunBatch:
    """Runs received at the same moment, at most one per mailbox, and their stored document."""

    runs: list[TestRunDoc]

    def document(self) -> Document:
        """A new document each time (its own id): a batch refused whole is written again as another.
        A Document: what the driver inserts."""
        return {
            "_id": uuid.uuid4().hex,
            "received_at": self.runs[0].received_at,
            "runs": [run.stored() for run in self.runs],
        }


def run_batches(runs: Iterable[TestRunDoc]) -> list[RunBatch]:
    """Group runs into batches that share ``received_at`` and hold one run per mailbox, so a
    mailbox's history is its batches sorted by time (one run each, in ``runs_of``)."""
    open_at: dict[datetime, list[tuple[set[str], list[TestRunDoc]]]] = {}
    for run in runs:
        batches = open_at.setdefault(run.received_at, [])
        held = next((b for b in batches if run.mailbox_id not in b[0]), None)
        if held is None:
            held = (set(), [])
            batches.append(held)
        held[0].add(run.mailbox_id)
        held[1].append(run)
    return [RunBatch(held) for batches in open_at.values() for _, held in batches]


def _mailboxes(docs: list[Document]) -> list[MailboxDoc]:
    return [MailboxDoc.model_validate(d) for d in docs]


def _job(doc: Document | None) -> JobDoc | None:
    return None if doc is None else JobDoc.model_validate(doc)
