"""A single test whose result handler gave up: the mailbox does not wait on that test for ever.

The handler stores the run, then updates the mailbox; a database outage longer than the consumer's
retries dead-letters the result after the run was stored (docs/reliability.md finding 12). The
request set a watchdog time on the mailbox (``next_retry_at``); the retry loop applies the stored
run it finds there, and moves the watchdog on for a test that has no result yet.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from mailbox_helpers import (
    MakeHarness,
    completed_for,
    mailbox_body,
    profile_snapshot,
    result_stored_but_never_applied,
)

from mailwarden_servers import eventually

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

        # A test with no stored result at its watchdog keeps waiting: its watchdog moves on.
        async def moved_on() -> bool:
            doc = await stored("slow")
            return bool(doc["next_retry_at"] > first_watch)

        await eventually(moved_on, timeout=20, what="the unanswered test's watchdog moved on")
        assert (await stored("slow"))["pending_test_id"] == slow_id
        await h.complete(by_mailbox["slow"])
        done = await h.wait_mailbox("slow", lambda m: m["pending_test_id"] is None)
        assert done["incoming_status"] == "success"
        assert (await stored("slow"))["last_test_id"] == slow_id and (await stored("slow"))[
            "next_retry_at"
        ] is None

        changed = [
            e["data"]["data"]["test_id"] for e in await h.stream_messages("mailwarden.mailbox.status_changed")
        ]
        assert sorted(changed) == sorted([lost_id, slow_id])  # each applied once
        assert await h.no_more_requests()  # the watchdog requested no test
