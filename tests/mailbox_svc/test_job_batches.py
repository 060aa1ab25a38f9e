"""A job's expansion as inserted batch records over its document, against the real MongoDB-wire server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from mailbox_svc.documents import JobBatchDoc, JobDoc
from mailbox_svc.jobexpansion import JobExpansions
from mailbox_svc.store.jobs import JobStore

T0 = datetime(2026, 12, 4, 5, 0, tzinfo=UTC)


@pytest.fixture
async def store(fresh_db: AsyncDatabase[dict[str, Any]]) -> JobStore:
    store = JobStore(fresh_db)
    await store.ensure_indexes()
    return store


def batch(job_id: str, seq: int, cursor: str | None, n: int, by: str = "a", **kw: Any) -> JobBatchDoc:
    at = T0 + timedelta(seconds=seq)
    return JobBatchDoc(
        id=JobBatchDoc.key(job_id, seq),
        job_id=job_id,
        seq=seq,
        cursor=cursor,
        requested=n,
        by=by,
        at=at,
        **kw,
    )


async def test_a_job_is_its_document_with_its_batch_records_laid_over(store: JobStore) -> None:
    # stored before batch records: its own cursor and counts are where it goes on from
    job = JobDoc(
        id="j1", profile_id="p", total=300, requested=100, cursor="m099", refused={"x": 1}, created_at=T0
    )
    await store.insert(job, [])
    other = JobDoc(id="j10", profile_id="p", total=5, created_at=T0)  # an id that j1's range must not take
    await store.insert(other, [])
    expansions = JobExpansions(store, lease_s=60)
    assert await expansions.apply(job) == job and expansions.seq("j1") == 0

    assert await store.record_batch(batch("j1", 1, "m199", 100, refused={"x": 2, "y": 1}))
    assert await store.record_batch(batch("j10", 1, "m004", 5, by="b"))
    assert not await store.record_batch(batch("j1", 1, "m150", 50, by="b")), "one replica records a batch"
    seen = await expansions.apply(job)
    assert (seen.cursor, seen.requested, seen.refused, seen.expanded) == (
        "m199",
        200,
        {"x": 3, "y": 1},
        False,
    )
    assert (seen.lease_owner, seen.lease_until) == ("a", T0 + timedelta(seconds=61))
    assert expansions.seq("j1") == 1

    assert await store.record_batch(batch("j1", 2, "m299", 100, by="b"))
    assert await store.record_batch(batch("j1", 3, "m299", 0, by="b", expanded=True))
    seen = await expansions.apply(job)  # reads only the records after the last one seen
    assert (seen.cursor, seen.requested, seen.expanded, seen.lease_owner) == ("m299", 300, True, "b")
    assert await JobExpansions(store, lease_s=60).apply(job) == seen  # another process folds the same
    assert (await expansions.apply(other)).requested == 5


async def test_looks_that_run_alongside_add_each_record_once(store: JobStore) -> None:
    """An API read and the runner's pass fold the same job at once: each record counts once."""
    job = JobDoc(id="j2", profile_id="p", total=300, created_at=T0)
    await store.insert(job, [])
    expansions = JobExpansions(store, lease_s=60)
    await store.record_batch(batch("j2", 1, "m099", 100))
    await expansions.apply(job)
    await store.record_batch(batch("j2", 2, "m199", 100))
    seen = await asyncio.gather(*(expansions.apply(job) for _ in range(5)))
    assert {s.requested for s in seen} == {200}
    assert (await expansions.apply(job)).requested == 200
