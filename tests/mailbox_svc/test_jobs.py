"""Test & Enable all mailboxes of a profile: an asynchronous job with progress, cancel and summary."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mailbox_helpers import MakeHarness, completed_for, profile_snapshot, result_stored_but_never_applied

import mailbox_svc.handlers as handlers_module
import mailbox_svc.jobs as jobs_module
from contracts.envelope import make_envelope
from contracts.errors import ErrorCode
from contracts.models import CredentialSource
from mailwarden_servers import eventually
from tester_svc.handlers import withdrawn

N = 500


async def seed(h: Any, profile_id: str, n: int) -> None:
    """n mailboxes of one profile, created through the API in bulk writes of 250."""
    for start in range(0, n, 250):
        batch = [
            {
                "mailbox_id": f"{profile_id}-{i:04d}",
                "email": f"m{i}@{profile_id}.example.com",
                "owner": {"kind": "user", "id": f"u{i}", "name": f"User {i}"},
                "profile_id": profile_id,
            }
            for i in range(start, min(n, start + 250))
        ]
        r = await h.http.post("/mailboxes/batch", json={"mailboxes": batch})
        assert r.status_code == 201, r.text


async def test_job_of_500_mailboxes_reports_progress_and_summary(make_harness: MakeHarness) -> None:
    async with make_harness(job_batch_size=100, job_max_in_flight=500) as h:
        await h.profile(profile_snapshot("pj", source=CredentialSource.PROFILE, max_connections=300))
        await h.org_settings(approved_users_only=False)
        await seed(h, "pj", N)
        r = await h.http.post("/jobs", json={"profile_id": "pj"})
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        assert r.json()["total"] == N and r.json()["state"] == "running"

        reqs = await h.test_requests(N, timeout=60)
        assert len({q.mailbox.mailbox_id for q in reqs}) == N
        assert {q.job_id for q in reqs} == {job_id}
        # the first 400 pass, 60 fail permanently, 40 time out
        for i, req in enumerate(sorted(reqs, key=lambda q: q.mailbox.mailbox_id)):
            if i < 400:
                await h.complete(req)
            elif i < 460:
                await h.complete(req, incoming=ErrorCode.AUTH_FAILED)
            else:
                await h.complete(req, incoming=ErrorCode.TCP_TIMEOUT)
            if i == 250:
                mid = (await h.http.get(f"/jobs/{job_id}")).json()
                assert mid["requested"] == N and mid["done"] <= 251 and mid["state"] == "running"

        async def finished() -> dict[str, Any] | None:
            job = (await h.http.get(f"/jobs/{job_id}")).json()
            return job if job["state"] == "completed" else None

        job = await eventually(finished, timeout=60, what="job completed")
        assert (job["total"], job["requested"], job["done"], job["succeeded"]) == (N, N, N, 400)
        assert job["failed"] == {"auth_failed": 60, "tcp_timeout": 40}

        events = await h.stream_messages("mailwarden.job.")
        types = [e["data"]["type"] for e in events]
        assert types[0] == "TestJobStarted" and types.count("TestJobCompleted") == 1
        # one per expanded batch, then as results move the counters (at most one a second)
        dones = [
            e["data"]["data"]["progress"]["done"] for e in events if e["data"]["type"] == "TestJobProgress"
        ]
        assert len(dones) > N // 100 and dones == sorted(dones) and any(0 < d < N for d in dones), dones
        summary = next(e["data"]["data"] for e in events if e["data"]["type"] == "TestJobCompleted")
        assert summary["state"] == "completed" and summary["progress"]["failed"]["auth_failed"] == 60
        ok = (
            await h.http.get(
                "/mailboxes", params={"profile_id": "pj", "incoming_status": "success", "limit": 500}
            )
        ).json()
        assert len(ok["items"]) == 400


async def test_job_cancel_stops_requesting(make_harness: MakeHarness) -> None:
    async with make_harness(job_batch_size=20, job_max_in_flight=40) as h:
        await h.profile(profile_snapshot("pc", source=CredentialSource.PROFILE, max_connections=300))
        await seed(h, "pc", 120)
        job_id = (await h.http.post("/jobs", json={"profile_id": "pc"})).json()["job_id"]
        first = await h.test_requests(40)  # the job waits for results before requesting more
        assert await h.no_more_requests(0.5)
        for req in first[:10]:
            await h.complete(req)
        # refilled in whole batches (20 here): ten results are not yet worth an expansion
        assert await h.no_more_requests(0.5)
        for req in first[10:20]:
            await h.complete(req)
        more = await h.test_requests(20)  # twenty results make room for a batch of twenty
        assert all(q.job_id == job_id for q in more)

        async def twenty_counted() -> bool:
            job = (await h.http.get(f"/jobs/{job_id}")).json()
            return bool(job["done"] == 20 and job["requested"] == 60)

        await eventually(twenty_counted, what="twenty results counted")
        running_since = datetime.now(UTC)  # first[20:30] started before the cancel
        r = await h.http.post(f"/jobs/{job_id}/cancel")
        assert r.status_code == 200 and r.json()["state"] == "cancelled"
        assert (r.json()["requested"], r.json()["done"], r.json()["total"]) == (60, 20, 120)
        stored = await h.db["jobs"].find_one({"_id": job_id})  # who started and cancelled it (the audit)
        assert stored["created_by"] == stored["cancelled_by"] == "token:admin"
        for req in first[20:30]:  # were running: they finish, apply and count
            await h.publish(completed_for(req).model_copy(update={"started_at": running_since}))
        for req in first[30:35]:  # had not started: a tester that checked the job withdrew them
            await h.publish(withdrawn(req, "fake-tester"))
        for req in first[35:]:  # had not started, run by a tester that did not check: withdrawn here
            await h.complete(req, "auth_failed", "auth_failed")

        async def thirty_done() -> dict[str, Any] | None:
            job = (await h.http.get(f"/jobs/{job_id}")).json()
            return job if job["done"] == 30 else None

        job = await eventually(thirty_done, what="the started tests counted after the cancel")
        assert job["state"] == "cancelled" and "auth_failed" not in job["failed"]  # withdrawn: not counted
        assert await h.no_more_requests(0.8)
        for req in first[30:]:  # no status, no alert, no retry: only free of waiting
            mb = await h.wait_mailbox(req.mailbox.mailbox_id, lambda m: not m["test_scheduled"])
            assert (mb["incoming_status"], mb["retry_count"], mb["last_error"]) == ("not_run", 0, None)
        assert (await h.mailbox(first[25].mailbox.mailbox_id))["incoming_status"] == "success"
        changed = await h.stream_messages("mailwarden.mailbox.status_changed")
        assert len(changed) == 30
        runs = (await h.http.get(f"/mailboxes/{first[35].mailbox.mailbox_id}/tests")).json()["items"]
        assert [r["outcome"] for r in runs] == ["withdrawn"]

        async def progress_after_cancel() -> bool:
            events = [e["data"]["data"] for e in await h.stream_messages("mailwarden.job.progress")]
            return any(e["state"] == "cancelled" and e["progress"]["done"] == 30 for e in events)

        await eventually(progress_after_cancel, what="TestJobProgress as the counters moved")
        again = await h.http.post(f"/jobs/{job_id}/cancel")
        assert again.status_code == 409
        summaries = [e["data"]["data"] for e in await h.stream_messages("mailwarden.job.completed")]
        assert [s["state"] for s in summaries] == ["cancelled"]
        assert (await h.http.get(f"/jobs/{job_id}")).json()["state"] == "cancelled"
        await asyncio.sleep(0)


async def test_a_job_queues_at_most_twice_what_its_servers_take(make_harness: MakeHarness) -> None:
    """A dead or slow server's job keeps a short queue: unrelated tests are not behind it (issue #16)."""
    async with make_harness(job_batch_size=100, job_max_in_flight=500) as h:
        await h.profile(profile_snapshot("ps", source=CredentialSource.PROFILE, max_connections=4))
        await seed(h, "ps", 50)
        job_id = (await h.http.post("/jobs", json={"profile_id": "ps"})).json()["job_id"]
        first = await h.test_requests(8)
        assert await h.no_more_requests(0.8), "more than 2 x max_concurrent_connections queued"
        for req in first[:3]:
            await h.complete(req)
        assert await h.no_more_requests(0.5)  # refilled by half its cap at least: four here
        await h.complete(first[3])
        more = await h.test_requests(4)  # four results make room for four more
        assert {q.job_id for q in first + more} == {job_id}
        assert await h.no_more_requests(0.5)


async def test_job_refuses_an_unknown_profile(make_harness: MakeHarness) -> None:
    async with make_harness() as h:
        r = await h.http.post("/jobs", json={"profile_id": "ghost"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "profile_id"
        assert (await h.http.get("/jobs/job_nope")).status_code == 404


async def test_job_resumes_after_a_restart(make_harness: MakeHarness) -> None:
    settings = {"job_batch_size": 10, "job_max_in_flight": 20}
    async with make_harness(**settings) as h:
        await h.profile(profile_snapshot("pr", source=CredentialSource.PROFILE, max_connections=300))
        await seed(h, "pr", 30)
        job_id = (await h.http.post("/jobs", json={"profile_id": "pr"})).json()["job_id"]
        first = await h.test_requests(20)
    async with make_harness(**settings) as h:  # a new process on the same database
        for req in first:
            await h.complete(req)
        rest = await h.test_requests(10)
        assert {q.mailbox.mailbox_id for q in first + rest} == {f"pr-{i:04d}" for i in range(30)}
        for req in rest:
            await h.complete(req)

        async def finished() -> dict[str, Any] | None:
            job = (await h.rpc("job_get", {"job_id": job_id}))["result"]
            return job if job["state"] == "completed" else None

        job = await eventually(finished, what="job completed after restart")
        # users need approval by default: the tests pass, the mailboxes stay disabled, and the job says so
        assert (job["requested"], job["done"], job["succeeded"]) == (30, 30, 0)
        assert job["failed"] == {"mailbox_not_approved": 30}


async def test_job_results_are_counted_from_the_runs_once_each_and_recounted(
    make_harness: MakeHarness, monkeypatch: Any
) -> None:
    """Progress is counted from the stored runs, each once; the running job's document is not
    written (its expansion is inserted batch records); a run stored long after it was received (which the looks at recent batches miss) is
    found by a recount once the job stays behind."""
    async with make_harness(job_batch_size=10, job_max_in_flight=10) as h:
        await h.profile(profile_snapshot("pc", source=CredentialSource.PROFILE, max_connections=300))
        await h.org_settings(approved_users_only=False)
        await seed(h, "pc", 5)
        job_id = (await h.http.post("/jobs", json={"profile_id": "pc"})).json()["job_id"]
        reqs = sorted(await h.test_requests(5), key=lambda q: q.mailbox.mailbox_id)

        no_outbox = {"outbox": 0, "outbox_pending": 0, "outbox_since": 0, "outbox_at": 0}
        stored = await h.db.jobs.find_one({"_id": job_id}, no_outbox)

        async def expanded() -> dict[str, Any] | None:
            return await h.db.job_batches.find_one({"job_id": job_id, "expanded": True})

        await eventually(expanded, what="the job expanded")
        batches = await h.db.job_batches.find({"job_id": job_id}).sort("_id", 1).to_list(None)
        assert [(b["seq"], b["requested"], b["expanded"]) for b in batches] == [(1, 5, False), (2, 0, True)]
        done = [await h.complete(req) for req in reqs[:3]]

        async def progress(n: int) -> dict[str, Any] | None:
            job = (await h.http.get(f"/jobs/{job_id}")).json()
            return job if job["done"] == n else None

        await eventually(lambda: progress(3), what="3 results counted")
        await h.publish(done[0])  # a redelivered result, in a new envelope
        await h.settled()
        await asyncio.sleep(1.2)  # past the next look at the runs
        assert (await h.http.get(f"/jobs/{job_id}")).json()["done"] == 3, "a result counted twice"

        async def three_published() -> bool:
            events = [e["data"]["data"] for e in await h.stream_messages("mailwarden.job.progress")]
            return any(e["progress"]["done"] == 3 for e in events)

        await eventually(three_published, what="TestJobProgress with the three results")
        assert await h.db.jobs.find_one({"_id": job_id}, no_outbox) == stored, "the running job was written"
        # Received an hour ago, stored now (a handler retrying through an outage): older than any
        # look at the recent runs reads again.
        monkeypatch.setattr(jobs_module, "RECONCILE_AFTER_S", 0.5)
        with pytest.MonkeyPatch.context() as late:
            late.setattr(handlers_module, "utcnow", lambda: datetime.now(UTC) - timedelta(hours=1))
            await h.app.state.handlers.test_completed(make_envelope(completed_for(reqs[3]), "tester-svc"))
        await h.complete(reqs[4])

        async def finished() -> dict[str, Any] | None:
            job = (await h.http.get(f"/jobs/{job_id}")).json()
            return job if job["state"] == "completed" else None

        job = await eventually(finished, timeout=20, what="job completed after recounting")
        assert (job["done"], job["succeeded"], job["failed"]) == (5, 5, {})


async def test_a_job_applies_a_stored_result_its_handler_gave_up_on(
    make_harness: MakeHarness, monkeypatch: Any
) -> None:
    """A run stored whose mailbox update kept failing (a database outage longer than the consumer's
    retries: the message is dead-lettered) still counts for the job: the job applies it before it
    completes, once; a result a later test superseded (a retry's) is left alone."""
    async with make_harness(
        job_batch_size=10, job_max_in_flight=10, retry_interval_s=0.2, retry_jitter=0.0
    ) as h:
        await h.profile(profile_snapshot("pg", source=CredentialSource.PROFILE, max_connections=300))
        await h.org_settings(approved_users_only=False)
        await seed(h, "pg", 3)
        job_id = (await h.http.post("/jobs", json={"profile_id": "pg"})).json()["job_id"]
        retried, normal, lost = sorted(await h.test_requests(3), key=lambda q: q.mailbox.mailbox_id)
        await h.complete(retried, incoming=ErrorCode.TCP_TIMEOUT)  # transient: tested again
        (retry,) = await h.test_requests(1)
        assert retry.mailbox.mailbox_id == retried.mailbox.mailbox_id and retry.test_id != retried.test_id
        await h.complete(retry)
        await h.complete(normal)

        async def last_test(mailbox_id: str) -> str | None:
            doc = await h.db.mailboxes.find_one({"_id": mailbox_id}, {"last_test_id": 1})
            return None if doc is None else doc.get("last_test_id")

        for req in (retry, normal):  # applied before the database "goes"

            async def applied(mailbox_id: str = req.mailbox.mailbox_id, test_id: str = req.test_id) -> bool:
                return await last_test(mailbox_id) == test_id

            await eventually(applied, what=f"{req.test_id} applied")

        await result_stored_but_never_applied(h, completed_for(lost))
        assert (await h.db.test_run_batches.find_one({"runs._id": lost.test_id})) is not None
        assert await last_test(lost.mailbox.mailbox_id) is None

        async def finished() -> dict[str, Any] | None:
            job = (await h.http.get(f"/jobs/{job_id}")).json()
            return job if job["state"] == "completed" else None

        job = await eventually(finished, timeout=30, what="job completed")
        assert (job["requested"], job["done"], job["succeeded"]) == (3, 3, 2)
        assert await last_test(lost.mailbox.mailbox_id) == lost.test_id  # applied before the job completed
        assert (await h.mailbox(lost.mailbox.mailbox_id))["incoming_status"] == "success"
        assert await last_test(retried.mailbox.mailbox_id) == retry.test_id  # the retry's result stays
        changed = [
            e["data"]["data"]["test_id"] for e in await h.stream_messages("mailwarden.mailbox.status_changed")
        ]
        assert sorted(changed) == sorted([retried.test_id, retry.test_id, normal.test_id, lost.test_id])


async def test_a_job_closing_sweep_reads_only_the_mailboxes_not_known_to_have_taken_its_test(
    make_harness: MakeHarness, monkeypatch: Any
) -> None:
    """The process that expanded the whole job knows which mailboxes applied the job's test (its
    result handlers tell it): the close reads only the others, by id, not every mailbox of the
    profile, and still applies the result a handler gave up on (jobsweep.py)."""
    async with make_harness(job_batch_size=10, job_max_in_flight=30) as h:
        await h.profile(profile_snapshot("pw", source=CredentialSource.PROFILE, max_connections=300))
        await h.org_settings(approved_users_only=False)
        await seed(h, "pw", 30)
        mailboxes = h.app.state.stores.mailboxes
        reads: list[frozenset[str] | None] = []
        last_tests = mailboxes.last_tests

        async def spy(profile_id: str, ids: Any = None) -> dict[str, str | None]:
            reads.append(None if ids is None else frozenset(ids))
            return await last_tests(profile_id, ids)

        monkeypatch.setattr(mailboxes, "last_tests", spy)
        job_id = (await h.http.post("/jobs", json={"profile_id": "pw"})).json()["job_id"]
        reqs = sorted(await h.test_requests(30), key=lambda q: q.mailbox.mailbox_id)
        lost = reqs[7]
        for req in reqs:
            if req is not lost:
                await h.complete(req)

        async def applied_all() -> bool:
            docs = await h.db.mailboxes.find({"profile_id": "pw"}, {"last_test_id": 1}).to_list(None)
            return sum(d.get("last_test_id") is not None for d in docs) == 29

        await eventually(applied_all, what="29 results applied")
        await result_stored_but_never_applied(h, completed_for(lost))

        async def finished() -> dict[str, Any] | None:
            job = (await h.http.get(f"/jobs/{job_id}")).json()
            return job if job["state"] == "completed" else None

        job = await eventually(finished, timeout=30, what="job completed")
        assert (job["requested"], job["done"], job["succeeded"]) == (30, 30, 30)
        assert reads == [frozenset({lost.mailbox.mailbox_id})]  # by id: the one not known to be done
        doc = await h.db.mailboxes.find_one({"_id": lost.mailbox.mailbox_id}, {"last_test_id": 1})
        assert doc is not None and doc["last_test_id"] == lost.test_id  # applied before it completed
