"""A single test whose result handler gave up: the mailbox does not wait on that test for ever.

The handler stores the run, then updates the mailbox; a database outage longer than the consumer's
retries dead-letters the result after the run was stored (docs/reliability.md finding 12). The
request set a watchdog time on the mailbox (``next_retry_at``); the retry loop applies the stored
run it finds there. A test with no stored result at its watchdog (lost before its run was stored)
is requested again under the same test id a bounded number of times, then fails with ``no_result``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mailbox_helpers import (
    Harness,
    MakeHarness,
    completed_for,
    mailbox_body,
    profile_snapshot,
    result_stored_but_never_applied,
)

from contracts.envelope import make_envelope
from contracts.events import TestRequested

WATCHDOG_S = 1.0


async def test_a_stored_result_its_handler_gave_up_on_is_applied_at_the_watchdog(
    make_harness: MakeHarness, monkeypatch: Any
) -> None:
    async with make_harness(result_watchdog_s=WATCHDOG_S) as h:
        await h.profile(profile_snapshot())
        await h.org_settings(approved_users_only=False)
        for n, mailbox_id in ((1, "lost"), (2, "slow")):
            assert (
                await h.http.post("/mailboxes", json=mailbox_body(n, mailbox_id=mailbox_id))
            ).status_code == 201
        lost_id = (await h.http.post("/mailboxes/lost/test")).json()["test_id"]
        slow_id = (await h.http.post("/mailboxes/slow/test")).json()["test_id"]
        by_mailbox = {q.mailbox.mailbox_id: q for q in await h.test_requests(2)}
        assert (by_mailbox["lost"].test_id, by_mailbox["slow"].test_id) == (lost_id, slow_id)
        pending = await h.mailbox("lost")
        assert pending["pending_test_id"] == lost_id and pending["postponed_until"] is None

        async def stored(mailbox_id: str) -> dict[str, Any]:
            doc = await h.db.mailboxes.find_one({"_id": mailbox_id})
            assert doc is not None
            return dict(doc)

        first_watch: datetime = (await stored("slow"))["next_retry_at"]

        await result_stored_but_never_applied(h, completed_for(by_mailbox["lost"]))
        assert (await h.db.test_run_batches.find_one({"runs._id": lost_id})) is not None
        assert (await stored("lost"))["pending_test_id"] == lost_id

        applied = await h.wait_mailbox("lost", lambda m: m["pending_test_id"] is None, timeout=20)
        assert (await stored("lost"))["last_test_id"] == lost_id and applied["incoming_status"] == "success"
        assert applied["enabled_incoming"] and applied["postponed_until"] is None

        # A test with no stored result at its watchdog is requested again: same test, new watchdog.
        (again,) = await h.test_requests(1, timeout=20)
        assert (again.test_id, again.attempt) == (slow_id, by_mailbox["slow"].attempt)
        assert again.mailbox.mailbox_id == "slow"
        resent = await stored("slow")
        assert resent["pending_test_id"] == slow_id and resent["next_retry_at"] > first_watch
        assert resent["watchdog_resends"] >= 1
        await h.complete(by_mailbox["slow"])  # the first request's result, late: applied once
        done = await h.wait_mailbox("slow", lambda m: m["pending_test_id"] is None)
        assert done["incoming_status"] == "success"
        after = await stored("slow")
        assert after["last_test_id"] == slow_id and after["next_retry_at"] is None
        assert after["watchdog_resends"] == 0

        changed = [
            e["data"]["data"]["test_id"] for e in await h.stream_messages("mailwarden.mailbox.status_changed")
        ]
        assert sorted(changed) == sorted([lost_id, slow_id])  # each applied once
        # A resend written before the late result was applied may still be on its way; none after.
        assert {q.test_id for q in await _requests_until_quiet(h)} <= {slow_id}


async def _requests_until_quiet(h: Harness) -> list[TestRequested]:
    """Every TestRequested still coming, until none came for two watchdog periods."""
    out: list[TestRequested] = []
    while True:
        try:
            out.extend(await h.test_requests(1, timeout=2 * WATCHDOG_S))
        except AssertionError:
            return out


async def _status_changes(h: Harness, test_id: str) -> list[dict[str, Any]]:
    events = await h.stream_messages("mailwarden.mailbox.status_changed")
    return [e["data"]["data"] for e in events if e["data"]["data"]["test_id"] == test_id]


async def _stored_runs(h: Harness, test_id: str) -> list[dict[str, Any]]:
    """The stored runs of ``test_id``: runs are kept per result batch (``test_run_batches``)."""
    found = await h.db.test_run_batches.aggregate(
        [{"$match": {"runs._id": test_id}}, {"$unwind": "$runs"}, {"$match": {"runs._id": test_id}}]
    )
    return [d["runs"] for d in await found.to_list(None)]


async def test_a_test_never_answered_is_requested_again_then_fails_with_no_result(
    make_harness: MakeHarness,
) -> None:
    async with make_harness(result_watchdog_s=WATCHDOG_S, result_watchdog_resends=2) as h:
        await h.profile(profile_snapshot())
        await h.org_settings(approved_users_only=False)
        assert (await h.http.post("/mailboxes", json=mailbox_body(1, mailbox_id="mute"))).status_code == 201
        test_id = (await h.http.post("/mailboxes/mute/test")).json()["test_id"]
        first, *resent = await h.test_requests(3, timeout=30)  # the request, then 2 resends
        assert [q.test_id for q in (first, *resent)] == [test_id] * 3
        assert {q.attempt for q in resent} == {first.attempt}

        failed = await h.wait_mailbox("mute", lambda m: m["pending_test_id"] is None, timeout=20)
        assert failed["incoming_status"] == "failure"
        assert failed["last_error"]["code"] == "no_result"
        (run,) = await _stored_runs(h, test_id)
        assert run["result"]["tester"] == "mailbox-svc/watchdog"
        assert run["result"]["incoming"]["error"]["code"] == "no_result"
        (change,) = await _status_changes(h, test_id)
        assert change["incoming_status"] == "failure"
        assert change["incoming_error"]["code"] == "no_result"
        assert change["incoming_error"]["transient"] is True
        assert await h.no_more_requests(wait=2 * WATCHDOG_S)  # failed: not requested a fourth time

        # The tester's result, arriving after all: a redelivery of a stored run, applied nowhere.
        late = completed_for(first)
        await h.app.state.handlers.test_completed(make_envelope(late, "tester-svc"))
        assert (await h.mailbox("mute"))["incoming_status"] == "failure"
        assert len(await _stored_runs(h, test_id)) == 1
        assert len(await _status_changes(h, test_id)) == 1
