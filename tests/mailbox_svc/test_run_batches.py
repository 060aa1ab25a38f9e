"""Test runs stored per result batch, against the real MongoDB-wire server: every reader answers as
with one document per run, and a redelivered result is never stored twice (the unique multikey
``runs._id`` index)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mailbox_helpers import PROFILE_OWNER, owner
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from contracts.events import TestCompleted
from contracts.models import MailboxRef
from mailbox_svc import jobresults
from mailbox_svc.documents import TestRunDoc
from mailbox_svc.jobresults import JobResults
from mailbox_svc.store.runs import RUN_BATCHES, TEST_RUNS, WITHDRAWN, RunStore, run_batches

T0 = datetime(2026, 12, 4, 5, 0, tzinfo=UTC)


@pytest.fixture
async def store(fresh_db: AsyncDatabase[dict[str, Any]]) -> RunStore:
    store = RunStore(fresh_db)
    await store.ensure_indexes()
    return store


def run(
    test_id: str, mailbox_id: str, at: datetime, job_id: str | None = None, outcome: str = "success"
) -> TestRunDoc:
    ref = MailboxRef(
        mailbox_id=mailbox_id,
        email=f"{mailbox_id}@example.com",
        owner=owner(),
        profile_id="prof1",
        profile_owner=PROFILE_OWNER,
    )
    result = TestCompleted(
        test_id=test_id, mailbox=ref, job_id=job_id, started_at=at, finished_at=at, tester="t1"
    )
    return TestRunDoc(
        id=test_id,
        mailbox_id=mailbox_id,
        attempt=1,
        job_id=job_id,
        outcome=outcome,
        received_at=at,
        result=result,
    )


async def test_a_batch_of_results_is_one_document_with_one_run_per_mailbox(
    store: RunStore, fresh_db: AsyncDatabase[dict[str, Any]]
) -> None:
    runs = [run("t1", "m1", T0), run("t2", "m2", T0), run("t3", "m1", T0)]
    assert [r.id for r in await store.record(runs)] == ["t1", "t2", "t3"]
    batches = await fresh_db[RUN_BATCHES].find({}, {"runs._id": 1}).to_list(None)
    assert sorted([r["_id"] for r in b["runs"]] for b in batches) == [["t1", "t2"], ["t3"]]
    assert [[r.id for r in b.runs] for b in run_batches(runs)] == [["t1", "t2"], ["t3"]]


async def test_a_redelivered_result_is_stored_once(
    store: RunStore, fresh_db: AsyncDatabase[dict[str, Any]]
) -> None:
    assert await store.record_one(run("t1", "m1", T0))
    later = T0 + timedelta(seconds=1)
    again = await store.record([run("t1", "m1", later), run("t2", "m2", later), run("t3", "m3", later)])
    assert [r.id for r in again] == ["t2", "t3"]
    assert not await store.record_one(run("t2", "m2", later + timedelta(seconds=1)))
    counted = await fresh_db[RUN_BATCHES].aggregate([{"$unwind": "$runs"}, {"$group": {"_id": "$runs._id"}}])
    assert sorted(d["_id"] for d in await counted.to_list(None)) == ["t1", "t2", "t3"]
    assert await fresh_db[RUN_BATCHES].count_documents({}) == 2
    with pytest.raises(DuplicateKeyError):  # the server itself keeps a run id unique across batches
        await fresh_db[RUN_BATCHES].insert_one({"_id": "raw", "received_at": T0, "runs": [{"_id": "t3"}]})


async def test_concurrent_copies_of_a_batch_store_each_run_once(store: RunStore) -> None:
    runs = [run(f"t{n}", f"m{n}", T0) for n in range(20)]
    first, second = await asyncio.gather(store.record(runs[:15]), store.record(runs[5:]))
    stored = [r.id for r in first + second]
    assert sorted(stored) == sorted(r.id for r in runs)
    assert set((await store.stored_results(stored)).keys()) == set(stored)


async def test_readers_answer_per_run(store: RunStore) -> None:
    # m1 tested in three batches (one of them a withdrawn test of job j), m2 in one
    await store.record(
        [run("a", "m1", T0, job_id="j"), run("b", "m2", T0, job_id="j", outcome="auth_failed")]
    )
    await store.record([run("c", "m1", T0 + timedelta(seconds=1), job_id="j", outcome=WITHDRAWN)])
    await store.record([run("d", "m1", T0 + timedelta(seconds=2)), run("e", "m3", T0 + timedelta(seconds=2))])

    assert [r.id for r in await store.of_mailbox("m1", 10)] == ["d", "c", "a"]
    assert [r.id for r in await store.of_mailbox("m1", 2)] == ["d", "c"]
    assert [r.id for r in await store.of_mailbox("m2", 10)] == ["b"]
    assert await store.of_mailbox("nobody", 10) == []
    history = await store.of_mailbox("m1", 1)
    assert history[0] == run("d", "m1", T0 + timedelta(seconds=2))  # read back as it was stored

    assert await store.job_results("j") == {"success": 1, "auth_failed": 1}  # the withdrawn one not counted
    # a batch holding a withdrawn run still yields its other runs
    await store.record(
        [
            run("f", "m1", T0 + timedelta(seconds=3), outcome=WITHDRAWN),
            run("g", "m2", T0 + timedelta(seconds=3)),
        ]
    )
    assert sorted(r.id for r in await store.by_ids(["a", "c", "f", "g", "zz"])) == ["a", "g"]
    stored = await store.stored_results(["a", "c", "zz"])
    assert sorted(stored) == ["a", "c"] and stored["c"].test_id == "c"


async def test_runs_stored_one_per_document_move_into_batches(
    fresh_db: AsyncDatabase[dict[str, Any]],
) -> None:
    old = [run("a", "m1", T0), run("b", "m2", T0), run("c", "m1", T0 + timedelta(seconds=1))]
    await fresh_db[TEST_RUNS].insert_many([r.stored() for r in old])
    store = RunStore(fresh_db)
    await store.ensure_indexes()
    assert TEST_RUNS not in await fresh_db.list_collection_names()
    assert [r.id for r in await store.of_mailbox("m1", 10)] == ["c", "a"]
    assert sorted(await store.stored_results(["a", "b", "c"])) == ["a", "b", "c"]
    await store.ensure_indexes()  # again: nothing left to move
    assert await fresh_db[RUN_BATCHES].count_documents({}) == 2


async def test_a_jobs_results_are_counted_once_each_from_the_recent_batches(
    store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``JobResults`` counts a job's runs once, then reads only the batches received since its last
    look (through the ``runs.job_id, received_at`` index); a batch received long before it was
    stored is found by an exact count."""
    monkeypatch.setattr(jobresults, "REFRESH_S", 0.0)
    counts = JobResults(store)
    now = datetime.now(UTC)
    await store.record([run("a", "m1", now - timedelta(seconds=30), job_id="j")])
    assert await counts.of("j") == {"success": 1}
    await store.record([run("b", "m2", now, job_id="j", outcome="auth_failed"), run("c", "m3", now)])
    await store.record([run("d", "m4", now, job_id="other")])
    assert await counts.of("j") == {"success": 1, "auth_failed": 1}
    assert await counts.of("j") == {"success": 1, "auth_failed": 1}, "a batch counted twice"
    await store.record([run("e", "m5", now - timedelta(seconds=2), job_id="j")])  # within the skew
    assert await counts.of("j") == {"success": 2, "auth_failed": 1}
    await store.record([run("f", "m6", now - timedelta(hours=1), job_id="j")])  # a straggler
    assert await counts.of("j") == {"success": 2, "auth_failed": 1}
    assert (
        await counts.of("j", exact=True) == {"success": 3, "auth_failed": 1} == await store.job_results("j")
    )
    plan = await store.batches.find({"runs.job_id": "j", "received_at": {"$gte": now}}).explain()
    assert "runs.job_id_1_received_at_1" in str(plan["queryPlanner"]["winningPlan"])


async def test_an_exact_count_reads_only_the_batches_not_counted_yet(
    store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #16, flat with size: the count that closes a job lists the job's batch ids and reads
    the results of only those this process has not counted, and is as exact as a recount."""
    monkeypatch.setattr(jobresults, "REFRESH_S", 0.0)
    counts = JobResults(store)
    now = datetime.now(UTC)
    for n in range(5):
        await store.record([run(f"r{n}", f"m{n}", now - timedelta(seconds=n), job_id="j")])
    assert await counts.of("j") == {"success": 5}
    read: list[set[str] | None] = []
    batches_of = store.job_result_batches

    async def recorded(job_id: str, since: datetime | None, ids: Any = None) -> Any:
        read.append(None if ids is None else set(ids))
        return await batches_of(job_id, since, ids)

    monkeypatch.setattr(store, "job_result_batches", recorded)
    assert await counts.of("j", exact=True) == {"success": 5}
    assert read == [], "everything was counted: nothing read but the ids"
    # stored late (stamped an hour ago: no look finds them), one of them only a withdrawn run
    await store.record([run("late", "m9", now - timedelta(hours=1), job_id="j", outcome="auth_failed")])
    await store.record([run("gone", "m8", now - timedelta(hours=1), job_id="j", outcome=WITHDRAWN)])
    assert await counts.of("j") == {"success": 5}, "no look finds them"
    read.clear()
    assert await counts.of("j", exact=True) == {"success": 5, "auth_failed": 1}
    assert len(read) == 1 and len(read[0] or ()) == 2, "only the two batches not counted yet were read"
    assert await store.job_results("j") == {"success": 5, "auth_failed": 1}, "as a recount says"
    read.clear()
    assert await counts.of("j", exact=True) == {"success": 5, "auth_failed": 1}
    assert read == [], "the withdrawn-only batch is not read again"
