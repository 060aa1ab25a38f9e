"""Test & Enable and the retry-or-disable policy, driven through the bus as the tester would."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from mailbox_helpers import (
    MakeHarness,
    completed_for,
    mailbox_body,
    open_sealed,
    owner,
    profile_snapshot,
)

from contracts.email import MailboxSyncFailed
from contracts.envelope import make_envelope
from contracts.errors import ErrorCode
from contracts.models import CredentialSource, OwnerKind
from contracts.models import TestError as SyncError
from mailwarden_runtime.crypto import KeyRing
from mailwarden_servers import eventually


def status_events(events: list[dict], mailbox_id: str) -> list[dict]:
    return [
        e["data"]["data"]
        for e in events
        if e["data"].get("type") == "MailboxStatusChanged"
        and e["data"]["data"]["mailbox"]["mailbox_id"] == mailbox_id
    ]


async def test_test_and_enable_success_request_and_status(make_harness: MakeHarness) -> None:
    async with make_harness() as h:
        await h.profile()
        await h.org_settings(allowed_ports=[993, 465], approved_users_only=True)
        body = mailbox_body(1, mailbox_id="m1", outgoing_delivery="server_side_sync")
        assert (await h.http.post("/mailboxes", json=body)).status_code == 201
        assert (await h.http.post("/mailboxes/approve", json={"mailbox_ids": ["m1"]})).status_code == 200

        r = await h.http.post("/mailboxes/m1/test")
        assert r.status_code == 202, r.text
        test_id = r.json()["test_id"]
        (req,) = await h.test_requests(1)
        assert req.test_id == test_id and req.attempt == 1 and req.job_id is None
        assert req.target.verify_tls is False and req.target.connect_timeout_s == 7.5
        assert req.target.max_concurrent_connections == 3 and req.target.outgoing.port == 465
        assert req.allowed_ports == [993, 465]
        assert req.mailbox.profile_owner.id == "admin1" and req.mailbox.owner.id == "u1"
        assert [d.value for d in req.directions] == ["incoming", "outgoing"]
        transit = KeyRing.parse(h.settings.transit_keys.get_secret_value())  # type: ignore[union-attr]
        assert req.credentials is not None and req.credentials.incoming and req.credentials.outgoing
        inc = open_sealed(transit, req, "incoming")
        out = open_sealed(transit, req, "outgoing")
        assert (
            inc == out == {"username": "user1", "password": "pw-secret-1"}
        )  # outgoing falls back to incoming

        mb = await h.mailbox("m1")
        assert mb["test_scheduled"] is True and mb["pending_test_id"] == test_id
        await h.complete(req)
        mb = await h.wait_mailbox("m1", lambda m: m["pending_test_id"] is None)
        assert (mb["incoming_status"], mb["outgoing_status"]) == ("success", "success")
        assert mb["enabled_incoming"] and mb["enabled_outgoing"] and mb["retry_count"] == 0
        on = (await h.http.get("/mailboxes", params={"enabled": "true"})).json()["items"]
        off = (await h.http.get("/mailboxes", params={"enabled": "false"})).json()["items"]
        assert [m["mailbox_id"] for m in on] == ["m1"] and off == []
        assert mb["last_test_completed_at"] and mb["disabled_reason"] is None and not mb["test_scheduled"]

        hist = (await h.http.get("/mailboxes/m1/tests")).json()["items"]
        assert [(x["test_id"], x["outcome"]) for x in hist] == [(test_id, "success")]
        assert hist[0]["result"]["tester"] == "fake-tester"
        (ev,) = status_events(await h.stream_messages("mailwarden.mailbox.status_changed"), "m1")
        assert ev["enabled_incoming"] and ev["test_id"] == test_id and ev["incoming_error"] is None


async def test_separate_outgoing_credentials_and_profile_credentials(make_harness: MakeHarness) -> None:
    async with make_harness() as h:
        transit = KeyRing.parse(h.settings.transit_keys.get_secret_value())  # type: ignore[union-attr]
        await h.profile()
        sealed = {"incoming": transit.seal(b'{"username":"shared","password":"x"}', "profile:p2:incoming")}
        await h.profile(profile_snapshot("p2", source=CredentialSource.PROFILE, sealed=sealed))  # type: ignore[arg-type]
        body = mailbox_body(
            1, mailbox_id="m1", outgoing_credentials={"username": "sender", "password": "out-pw"}
        )
        await h.http.post("/mailboxes", json=body)
        await h.http.post(
            "/mailboxes", json=mailbox_body(2, mailbox_id="m2", profile_id="p2", credentials=None)
        )
        r = await h.http.post("/mailboxes/test", json={"mailbox_ids": ["m1", "m2"]})
        assert r.status_code == 202 and r.json()["done"] == ["m1", "m2"]
        reqs = {q.mailbox.mailbox_id: q for q in await h.test_requests(2)}
        out = open_sealed(transit, reqs["m1"], "outgoing")
        assert out == {"username": "sender", "password": "out-pw"}
        assert reqs["m2"].credential_source is CredentialSource.PROFILE
        # the profile's login, re-sealed for this one test: the event's blob itself is not forwarded
        assert reqs["m2"].credentials is not None and reqs["m2"].credentials.incoming != sealed["incoming"]
        assert open_sealed(transit, reqs["m2"], "incoming") == {"username": "shared", "password": "x"}


async def test_no_profile_is_refused(make_harness: MakeHarness) -> None:
    async with make_harness() as h:
        await h.http.post("/mailboxes", json=mailbox_body(1, mailbox_id="m1", profile_id=None))
        r = await h.http.post("/mailboxes/m1/test")
        assert r.status_code == 409 and r.json()["errors"][0]["field"] == "profile_id"
        r = await h.http.post("/mailboxes/test", json={"mailbox_ids": ["m1"]})
        assert r.json()["refused"][0]["code"] == "no_profile"
        assert await h.no_more_requests()
        assert (await h.mailbox("m1"))["test_scheduled"] is False


async def test_unapproved_mailbox_is_never_enabled(make_harness: MakeHarness) -> None:
    async with make_harness() as h:
        await h.profile()
        await h.org_settings(approved_queues_only=True, approved_users_only=False)
        q = mailbox_body(1, mailbox_id="q1", owner=owner(OwnerKind.QUEUE, "q1"))
        await h.http.post("/mailboxes", json=q)
        await h.http.post("/mailboxes/q1/test")
        (req,) = await h.test_requests(1)
        await h.complete(req)
        mb = await h.wait_mailbox("q1", lambda m: m["pending_test_id"] is None)
        assert (
            mb["incoming_status"] == "success" and not mb["enabled_incoming"] and not mb["enabled_outgoing"]
        )
        assert mb["disabled_reason"] == "mailbox_not_approved"
        (ev,) = status_events(await h.stream_messages("mailwarden.mailbox.status_changed"), "q1")
        assert ev["disabled_reason"] == "mailbox_not_approved" and ev["enabled_incoming"] is False
        (run,) = (await h.http.get("/mailboxes/q1/tests")).json()["items"]
        assert run["outcome"] == "mailbox_not_approved"

        await h.http.post("/mailboxes/approve", json={"mailbox_ids": ["q1"]})
        await h.http.post("/mailboxes/q1/test")
        (req,) = await h.test_requests(1)
        await h.complete(req)
        mb = await h.wait_mailbox("q1", lambda m: m["enabled_incoming"])
        assert mb["enabled_outgoing"] and mb["disabled_reason"] is None


async def test_permanent_error_disables_at_once(make_harness: MakeHarness) -> None:
    async with make_harness(retry_interval_s=0.1) as h:
        await h.profile()
        await h.org_settings(approved_users_only=False)
        await h.http.post("/mailboxes", json=mailbox_body(1, mailbox_id="m1"))
        await h.http.post("/mailboxes/m1/test")
        (req,) = await h.test_requests(1)
        await h.complete(req, incoming=ErrorCode.AUTH_FAILED, outgoing="success")
        mb = await h.wait_mailbox("m1", lambda m: m["pending_test_id"] is None)
        assert (mb["incoming_status"], mb["enabled_incoming"]) == ("failure", False)
        assert (mb["outgoing_status"], mb["enabled_outgoing"]) == ("success", True)
        assert mb["disabled_reason"] == "auth_failed" and mb["postponed_until"] is None
        assert mb["last_error"]["code"] == "auth_failed" and mb["last_error"]["count"] == 1
        assert await h.no_more_requests(0.6)  # no retry of a permanent error
        (ev,) = status_events(await h.stream_messages("mailwarden.mailbox.status_changed"), "m1")
        assert ev["incoming_error"]["code"] == "auth_failed" and ev["next_retry_at"] is None


async def test_transient_error_retries_then_disables(make_harness: MakeHarness) -> None:
    async with make_harness(retry_interval_s=0.2, retry_max_attempts=3, scheduler_poll_s=0.05) as h:
        await h.profile()
        await h.org_settings(approved_users_only=False)
        await h.http.post("/mailboxes", json=mailbox_body(1, mailbox_id="m1", outgoing_delivery="none"))
        await h.http.post("/mailboxes/m1/test")
        seen = []
        for attempt in (1, 2, 3):
            (req,) = await h.test_requests(1)
            seen.append(req.attempt)
            assert [d.value for d in req.directions] == ["incoming"]
            await h.complete(req, incoming=ErrorCode.TCP_TIMEOUT)
            if attempt < 3:
                mb = await h.wait_mailbox("m1", lambda m, a=attempt: m["retry_count"] == a)
                assert mb["test_scheduled"] and mb["disabled_reason"] is None
                assert mb["incoming_status"] == "failure"
        assert seen == [1, 2, 3]
        mb = await h.wait_mailbox("m1", lambda m: m["disabled_reason"] == "tcp_timeout")
        assert not mb["enabled_incoming"] and not mb["test_scheduled"] and mb["postponed_until"] is None
        assert mb["last_error"]["count"] == 3
        assert await h.no_more_requests(0.6)
        evs = status_events(await h.stream_messages("mailwarden.mailbox.status_changed"), "m1")
        assert [e["retry_count"] for e in evs] == [1, 2, 2]
        assert [e["disabled_reason"] for e in evs] == [None, None, "tcp_timeout"]
        assert evs[0]["next_retry_at"] and evs[2]["next_retry_at"] is None
        assert len((await h.http.get("/mailboxes/m1/tests")).json()["items"]) == 3


async def test_retry_survives_a_restart(make_harness: MakeHarness) -> None:
    async with make_harness(retry_interval_s=1.0, scheduler_poll_s=0.05) as h:
        await h.profile()
        await h.http.post("/mailboxes", json=mailbox_body(1, mailbox_id="m1"))
        await h.http.post("/mailboxes/m1/test")
        (req,) = await h.test_requests(1)
        await h.complete(req, incoming=ErrorCode.SERVER_TEMPORARY_ERROR)
        await h.wait_mailbox("m1", lambda m: m["retry_count"] == 1)
    async with make_harness(retry_interval_s=1.0, scheduler_poll_s=0.05) as h:  # same database, new process
        (req2,) = await h.test_requests(1, timeout=10)
        assert req2.attempt == 2 and req2.mailbox.mailbox_id == "m1"
        assert [d.value for d in req2.directions] == ["incoming"]


async def test_duplicate_test_completed_changes_nothing(make_harness: MakeHarness) -> None:
    async with make_harness() as h:
        await h.profile()
        await h.http.post("/mailboxes", json=mailbox_body(1, mailbox_id="m1"))
        await h.http.post("/mailboxes/m1/test")
        (req,) = await h.test_requests(1)
        done = await h.complete(req)
        first = await h.wait_mailbox("m1", lambda m: m["pending_test_id"] is None)
        await h.publish(done)  # the same result again, in a new envelope (JetStream cannot dedupe it)
        dup_seq = h.last_seq

        async def consumed() -> bool:
            info = await h.js.consumer_info("MW_TESTS", "mailbox-svc-tests")
            return bool(info.ack_floor.stream_seq >= dup_seq)

        await eventually(consumed, what="duplicate handled")
        second = await h.mailbox("m1")
        assert second == first
        evs = status_events(await h.stream_messages("mailwarden.mailbox.status_changed"), "m1")
        assert len(evs) == 1
        assert len((await h.http.get("/mailboxes/m1/tests")).json()["items"]) == 1


async def test_a_batch_of_results_applies_each_once_even_with_duplicates_and_races(
    make_harness: MakeHarness,
) -> None:
    """The batch path (many results, three round trips) agrees with the one-result path."""
    async with make_harness() as h:
        await h.profile()
        await h.org_settings(approved_users_only=False)
        for n in (1, 2, 3):
            await h.http.post("/mailboxes", json=mailbox_body(n, mailbox_id=f"m{n}"))
        await h.http.post("/mailboxes/test", json={"mailbox_ids": ["m1", "m2", "m3"]})
        reqs = {r.mailbox.mailbox_id: r for r in await h.test_requests(3)}
        results = {
            "m1": completed_for(reqs["m1"]),
            "m2": completed_for(reqs["m2"], incoming=ErrorCode.AUTH_FAILED),
            "m3": completed_for(reqs["m3"]),
        }
        envs = [make_envelope(r, "fake-tester") for r in results.values()]
        envs += [make_envelope(results["m1"], "fake-tester")]  # the same result twice in one batch
        mailboxes = h.app.state.stores.mailboxes
        read = mailboxes.get_many

        async def read_then_another_writer(ids: list[str]) -> dict[str, Any]:
            """m3 changes between the batch's read and its write: its conditional update loses."""
            docs = await read(ids)
            await h.db.mailboxes.update_one({"_id": "m3"}, {"$inc": {"version": 1}})
            return dict(docs)

        mailboxes.get_many = read_then_another_writer
        handlers = h.app.state.handlers
        await handlers.test_completed_batch(envs)
        mailboxes.get_many = read
        for mailbox_id in ("m1", "m3"):
            mb = await h.mailbox(mailbox_id)
            assert mb["pending_test_id"] is None, mailbox_id
            assert (mb["incoming_status"], mb["outgoing_status"]) == ("success", "success")
        m2 = await h.mailbox("m2")
        assert (m2["incoming_status"], m2["disabled_reason"]) == ("failure", "auth_failed")
        before = [await h.mailbox(m) for m in ("m1", "m2", "m3")]
        await handlers.test_completed_batch(envs)  # a redelivered batch changes nothing
        assert [await h.mailbox(m) for m in ("m1", "m2", "m3")] == before
        await h.settled()
        events = await h.stream_messages("mailwarden.mailbox.status_changed")
        for mailbox_id in ("m1", "m2", "m3"):
            assert len(status_events(events, mailbox_id)) == 1, mailbox_id
            runs = (await h.http.get(f"/mailboxes/{mailbox_id}/tests")).json()["items"]
            assert len(runs) == 1, mailbox_id


async def test_a_sync_failure_tests_the_incoming_side_again_once(make_harness: MakeHarness) -> None:
    """sync-svc's MailboxSyncFailed → one incoming-only test; its result applies the usual policy."""
    async with make_harness(retry_interval_s=0.1) as h:
        await h.profile()
        await h.org_settings(approved_users_only=False)
        await h.http.post(
            "/mailboxes", json=mailbox_body(1, mailbox_id="m1", outgoing_delivery="server_side_sync")
        )
        await h.http.post("/mailboxes/m1/test")
        (req,) = await h.test_requests(1)
        await h.complete(req)
        await h.wait_mailbox("m1", lambda m: m["enabled_incoming"] and m["pending_test_id"] is None)

        spec = ErrorCode.AUTH_FAILED
        failed = MailboxSyncFailed(
            mailbox=req.mailbox,
            protocol="imap",
            error=SyncError(
                code=spec, step="login", transient=False, scope="mailbox", message="login refused"
            ),
            episode_id=uuid.uuid4(),
            first_failed_at=datetime.now(UTC),
        )
        await h.publish(failed)
        (retest,) = await h.test_requests(1)
        assert [d.value for d in retest.directions] == ["incoming"] and retest.test_id != req.test_id
        await h.publish(failed, event_id=uuid.uuid4())  # the same episode again: a test is pending
        assert await h.no_more_requests(0.5)
        await h.complete(retest, incoming=ErrorCode.AUTH_FAILED)
        mb = await h.wait_mailbox("m1", lambda m: m["pending_test_id"] is None)
        assert (mb["incoming_status"], mb["enabled_incoming"]) == ("failure", False)
        assert (mb["outgoing_status"], mb["enabled_outgoing"]) == ("success", True)
        events = status_events(await h.stream_messages("mailwarden.mailbox.status_changed"), "m1")
        assert events[-1]["incoming_error"]["code"] == "auth_failed" and not events[-1]["enabled_incoming"]
