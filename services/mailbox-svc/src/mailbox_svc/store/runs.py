"""The test runs, stored per result batch: one document (``_id``, ``received_at``, ``runs``) holds
the runs of the results handled together, at most one per mailbox. A test writes no document of its
own (the batch is ~1/100 of one), and the runs stay append-only."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, Field
from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from contracts.events import TestCompleted
from mailbox_svc.documents import RunBatchDoc, TestRunDoc
from mailwarden_runtime.docbuckets import EntryBuckets, insert_buckets
from mailwarden_runtime.documents import Stored
from mailwarden_runtime.mongo import Document

WITHDRAWN = "withdrawn"  # the outcome of a cancelled job's test that never started
TEST_RUNS = "test_runs"  # before session 6: one document per run, moved into run batches at start
RUN_BATCHES = "test_run_batches"
LEGACY_CHUNK = 500


class RunStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self.batches: AsyncCollection[Document] = db[RUN_BATCHES]
        self.buckets = EntryBuckets(
            self.batches, "runs", "_id", key_of=_test_id, document=_batch, group=run_groups, name="test runs"
        )

    async def ensure_indexes(self) -> None:
        """The indexes, then the move of runs stored before run batches (:meth:`_move_legacy`)."""
        # Multikey indexes over the runs: a run's test id is unique across every batch (a
        # redelivered result is not stored twice), a mailbox's history and a job's runs are found
        # by index. Each run costs the same three index entries as its own document did.
        await self.batches.create_index("runs._id", unique=True)
        await self.batches.create_index([("runs.mailbox_id", ASCENDING), ("received_at", DESCENDING)])
        # A job's runs by received_at too: its results are counted when read, each look reading only
        # the batches received since the last one (jobresults.py), flat with the job's size.
        with contextlib.suppress(OperationFailure):
            await self.batches.drop_index("runs.job_id_1")
        await self.batches.create_index([("runs.job_id", ASCENDING), ("received_at", ASCENDING)])
        await self._move_legacy()

    async def record_one(self, run: TestRunDoc) -> bool:
        """Store one test run; False when it was already stored (a redelivered result)."""
        return bool(await self.record([run]))

    async def record(self, runs: list[TestRunDoc]) -> list[TestRunDoc]:
        """Store test runs, usually as one batch document in one round trip; returns those stored
        now (not redelivered ones).

        A batch that holds an already stored run is refused whole (the unique ``runs._id``); its
        runs not stored yet are then written without it. Another replica storing the same runs
        meanwhile only repeats that, so the loop is short and never stores a run twice
        (``docbuckets.insert_buckets``).
        """
        return await insert_buckets(self.buckets, runs)

    async def _runs_of_tests(self, test_ids: list[str], withdrawn: bool = True) -> list[TestRunDoc]:
        """The stored runs (not their batches) of these tests, found through the ``runs._id``
        index (the first match picks batches, so it may test nothing but the ids)."""
        on_run: dict[str, dict[str, object]] = {"runs._id": {"$in": test_ids}}
        if not withdrawn:
            on_run["runs.outcome"] = {"$ne": WITHDRAWN}
        found = await self.batches.aggregate(
            [
                {"$match": {"runs._id": {"$in": test_ids}}},
                {"$unwind": "$runs"},
                {"$match": on_run},
                {"$replaceRoot": {"newRoot": "$runs"}},
            ]
        )
        return [TestRunDoc.model_validate(run) for run in await found.to_list(None)]

    async def by_ids(self, test_ids: list[str]) -> list[TestRunDoc]:
        """The stored runs of these tests (not withdrawn ones)."""
        if not test_ids:
            return []
        return await self._runs_of_tests(test_ids, withdrawn=False)

    async def stored_results(self, test_ids: list[str]) -> dict[str, TestCompleted]:
        """The stored results of these tests (withdrawn ones too), by test id."""
        if not test_ids:
            return {}
        return {run.id: run.result for run in await self._runs_of_tests(test_ids)}

    async def of_mailbox(self, mailbox_id: str, limit: int) -> list[TestRunDoc]:
        """A mailbox's runs, newest first: its batches newest first, each holding one of its runs."""
        cursor = self.batches.find(
            {"runs.mailbox_id": mailbox_id},
            {"received_at": 1, "runs": {"$elemMatch": {"mailbox_id": mailbox_id}}},
        )
        found = await cursor.sort("received_at", DESCENDING).limit(limit).to_list(None)
        return [run for batch in map(RunBatchDoc.model_validate, found) for run in batch.runs]

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
            await self.batches.aggregate(
                [
                    {"$match": match},
                    {"$unwind": "$runs"},
                    {"$match": {"runs.job_id": job_id, "runs.outcome": {"$ne": WITHDRAWN}}},
                    {"$group": {"_id": group, "n": {"$sum": 1}}},
                ]
            )
        ).to_list(None)
        batches: dict[str, JobResultBatch] = {}
        for row in map(_OutcomeCount.model_validate, rows):
            key = row.id
            batch = batches.setdefault(key.b, JobResultBatch(key.b, key.at, {}))
            batch.outcomes[key.o] = row.n
        return list(batches.values())

    async def job_run_batch_ids(self, job_id: str) -> set[str]:
        """The ids of the run batches holding the job's runs (ids only: ~1/6 of counting them)."""
        found = self.batches.find({"runs.job_id": job_id}, {"_id": 1})
        return {doc.id for doc in map(Stored.model_validate, await found.to_list(None))}

    async def _move_legacy(self) -> None:
        """Runs stored one per document (before run batches) move into batches, then the old
        collection goes; a restart midway repeats the copy, and runs already moved are skipped."""
        legacy = self.db[TEST_RUNS]
        if TEST_RUNS not in await self.db.list_collection_names():
            return
        cursor = legacy.find({})
        while chunk := await cursor.to_list(LEGACY_CHUNK):
            await self.record([TestRunDoc.model_validate(run) for run in chunk])
        await legacy.drop()


class _Outcome(BaseModel):
    """A group of :meth:`RunStore.job_result_batches`: a batch (id, received at) and an outcome."""

    b: str
    at: datetime
    o: str


class _OutcomeCount(BaseModel):
    """How many of a job's runs in one batch had one outcome (a row of the ``$group``)."""

    id: _Outcome = Field(alias="_id")
    n: int


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
    mailbox's history is its batches sorted by time (one run each, in ``of_mailbox``)."""
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


def run_groups(runs: Sequence[TestRunDoc]) -> list[list[TestRunDoc]]:
    """The runs of each batch (:func:`run_batches`)."""
    return [batch.runs for batch in run_batches(runs)]


def _test_id(run: TestRunDoc) -> str:
    return run.id


def _batch(runs: Sequence[TestRunDoc]) -> Document:
    return RunBatch(list(runs)).document()
