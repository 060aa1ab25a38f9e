"""Scheduled re-tests: enabled mailboxes that no sync watches are tested again on the org's interval."""

from __future__ import annotations

import asyncio
from typing import Any

from mailbox_helpers import MakeHarness, mailbox_body

from contracts.email import MailboxSyncPaused
from contracts.errors import ErrorCode


async def test_outgoing_only_and_paused_mailboxes_are_retested_synced_ones_are_not(
    make_harness: MakeHarness,
) -> None:
    async with make_harness(scheduler_poll_s=0.1) as h:
        await h.profile()
        await h.org_settings(approved_users_only=False, retest_interval_s=0)  # off while we set up
        await h.http.post("/mailboxes", json=mailbox_body(1, mailbox_id="out", incoming_delivery="none"))
        await h.http.post("/mailboxes", json=mailbox_body(2, mailbox_id="synced"))
        await h.http.post("/mailboxes", json=mailbox_body(3, mailbox_id="paused"))
        for mailbox_id in ("out", "synced", "paused"):
            assert (await h.http.post(f"/mailboxes/{mailbox_id}/test")).status_code == 202
        for req in await h.test_requests(3):
            await h.complete(req)
        for mailbox_id in ("out", "synced", "paused"):
            await h.wait_mailbox(mailbox_id, lambda m: m["pending_test_id"] is None)
        await h.publish(MailboxSyncPaused(mailbox_id="paused", paused=True))
        assert await h.no_more_requests(1.5)  # interval 0: never

        await h.org_settings(approved_users_only=False, retest_interval_s=1)
        due = {r.mailbox.mailbox_id: r for r in await h.test_requests(2, timeout=10)}
        assert {m: sorted(d.value for d in r.directions) for m, r in due.items()} == {
            "out": ["outgoing"],
            "paused": ["incoming", "outgoing"],
        }
        assert await h.no_more_requests(0.5)  # nothing twice while a re-test is pending

        # The outgoing password was changed on the server: the re-test reports it before mail fails
        # (auth_failed is permanent: disabled). The paused mailbox is fine, and its sync resumes.
        await h.publish(MailboxSyncPaused(mailbox_id="paused", paused=False))
        await h.complete(due["out"], outgoing=ErrorCode.AUTH_FAILED)
        await h.complete(due["paused"])
        out = await h.wait_mailbox("out", lambda m: m["outgoing_status"] == "failure")
        assert not out["enabled_outgoing"] and out["disabled_reason"] == "auth_failed"
        await h.wait_mailbox("paused", lambda m: m["pending_test_id"] is None)
        await asyncio.sleep(0.2)

        # "out" has nothing enabled any more; "paused" is synced again: neither is re-tested.
        assert await h.no_more_requests(2.5)


async def test_due_retests_are_searched_once_per_hundredth_of_the_interval_not_every_poll(
    make_harness: MakeHarness,
) -> None:
    """Each search reads every mailbox (no index serves it): at 10,000 mailboxes, every 5 s poll
    cost the embedded database 340 ms of CPU for re-tests due a day apart."""
    async with make_harness(scheduler_poll_s=0.05) as h:
        retests = h.app.state.retests
        searches = 0
        search = retests._due

        async def counted(cutoff: Any) -> Any:
            nonlocal searches
            searches += 1
            return await search(cutoff)

        retests._due = counted
        await h.org_settings(approved_users_only=False, retest_interval_s=6000)  # searched every 60 s
        await asyncio.sleep(1.5)
        assert searches <= 1  # the first may have run before we counted (the default interval: a day)
