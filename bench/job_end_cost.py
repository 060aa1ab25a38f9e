"""What a Test & Enable job's end costs the embedded database, by step, at N stored runs.

    .venv/bin/python -m bench.job_end_cost [--runs 10000] [--per-batch 60] [--repeat 5]

Starts a private SecantusDB (its own process), stores ``--runs`` test runs of one job in run
batches of ``--per-batch`` through mailbox-svc's run store (as its result handler does), and
times the reads a job's end makes, as SecantusDB process CPU (psutil) per call:

- ``recount``: the exact count over every stored run (what closed a job before perf7, O(runs));
- ``closing count``: :class:`JobResults`'s exact count after its looks have counted every batch
  (lists the job's batch ids, reads none: perf7);
- ``look (5 s)``: one look at the batches of the last 5 s (a running job's, about once a second);
- ``batch ids``: listing the ids alone;
- ``last_tests``: the stored-results sweep's read (every mailbox of the profile that waits on no
  test, ``last_test_id`` only), over ``--runs`` mailbox documents shaped like the bench's: what
  closing a job read before jobend9, and still reads when another process expanded part of it;
- ``sweep, 60 left``: the sweep's read after jobend9 when the process that expanded the job left
  ``--per-batch`` mailboxes not known to have taken the job's test (read by id; none at all when
  its handlers applied every result: then nothing is read).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
from pymongo import AsyncMongoClient

from contracts.events import TestCompleted
from contracts.models import MailboxRef, Owner, OwnerKind
from mailbox_svc.documents import TestRunDoc
from mailbox_svc.jobresults import JobResults
from mailbox_svc.store import Stores
from mailwarden_servers import MongoWireServer

OWNER = Owner(kind=OwnerKind.USER, id="u1", name="Owner", email="u1@example.com")


def _run(n: int, job_id: str, at: datetime) -> TestRunDoc:
    ref = MailboxRef(
        mailbox_id=f"m{n}", email=f"user{n}@example.com", owner=OWNER, profile_id="p", profile_owner=OWNER
    )
    test_id = uuid.uuid4().hex
    result = TestCompleted(
        test_id=test_id, mailbox=ref, job_id=job_id, started_at=at, finished_at=at, tester="tester-1"
    )
    return TestRunDoc(
        id=test_id, mailbox_id=ref.mailbox_id, attempt=1, job_id=job_id, outcome="success",
        received_at=at, result=result,
    )  # fmt: skip


async def _cpu_ms(proc: psutil.Process, call: Callable[[], Awaitable[Any]], repeat: int) -> float:
    t0 = proc.cpu_times()
    for _ in range(repeat):
        await call()
    t1 = proc.cpu_times()
    return float(1000 * (t1.user + t1.system - t0.user - t0.system) / repeat)


async def _main(uri: str, proc: psutil.Process, runs: int, per_batch: int, repeat: int) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, retryWrites=False, tz_aware=True)
    stores = Stores.on(client.bench)
    await stores.ensure_indexes()
    repo = stores.runs
    job_id = "job_bench"
    start = datetime.now(UTC) - timedelta(seconds=runs / per_batch)
    for b in range(0, runs, per_batch):
        at = start + timedelta(seconds=b / per_batch)
        await repo.record([_run(n, job_id, at) for n in range(b, min(b + per_batch, runs))])
    await client.bench.mailboxes.insert_many(
        [
            {"_id": f"m{n}", "profile_id": "p", "active": True, "pending_test_id": None,
             "last_test_id": uuid.uuid4().hex, "email": f"user{n}@example.com", "pad": "x" * 1500}
            for n in range(runs)
        ]
    )  # fmt: skip
    ids = [f"m{n}" for n in range(runs)]
    results = JobResults(repo)
    await results.of(job_id)  # counted once, as a running job's first look does
    since = datetime.now(UTC) - timedelta(seconds=5)
    rows = {
        "recount": lambda: repo.job_results(job_id),
        "closing count": lambda: results.of(job_id, exact=True),
        "look (5 s)": lambda: repo.job_result_batches(job_id, since),
        "batch ids": lambda: repo.job_run_batch_ids(job_id),
        "last_tests": lambda: stores.mailboxes.last_tests("p"),
        "sweep, 60 left": lambda: stores.mailboxes.last_tests("p", ids[:per_batch]),
    }
    print(f"SecantusDB CPU per call (ms), {runs:,} runs in batches of {per_batch}, mean of {repeat}")
    for name, call in rows.items():
        print(f"{name:16s}{await _cpu_ms(proc, call, repeat):10.1f}")
    await client.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10_000)
    p.add_argument("--per-batch", type=int, default=60)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, MongoWireServer(Path(tmp)) as server:
        t0 = time.monotonic()
        asyncio.run(_main(server.uri, psutil.Process(server.pid), args.runs, args.per_batch, args.repeat))
        print(f"({time.monotonic() - t0:.0f} s)")


if __name__ == "__main__":
    main()
