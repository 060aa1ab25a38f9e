"""A mailbox's own start of synchronization: validated at the edge, carried in its events."""

from __future__ import annotations

from datetime import UTC, datetime

from mailbox_helpers import MakeHarness, mailbox_body


async def test_process_email_received_after_is_validated_and_in_the_events(make_harness: MakeHarness) -> None:
    async with make_harness() as h:
        await h.profile()
        naive = await h.http.post(
            "/mailboxes",
            json=mailbox_body(1, mailbox_id="m0", process_email_received_after="2026-11-01T08:00"),
        )
        assert naive.status_code == 422
        assert [e["field"] for e in naive.json()["errors"]] == ["process_email_received_after"]

        start = "2026-11-01T08:30:00+00:00"
        created = await h.http.post(
            "/mailboxes", json=mailbox_body(1, mailbox_id="m1", process_email_received_after=start)
        )
        assert created.status_code == 201, created.text
        later = "2026-11-20T00:00:00+01:00"
        patched = await h.http.patch("/mailboxes/m1", json={"process_email_received_after": later})
        assert patched.status_code == 200, patched.text
        events = await h.stream_messages("mailwarden.mailbox.")
        snapshots = [
            e["data"]["data"]["mailbox"]
            for e in events
            if e["data"]["type"] in ("MailboxCreated", "MailboxUpdated")
        ]
        starts = [datetime.fromisoformat(s["process_email_received_after"]) for s in snapshots]
        assert starts == [datetime(2026, 11, 1, 8, 30, tzinfo=UTC), datetime(2026, 11, 19, 23, 0, tzinfo=UTC)]
        assert all(s["mailbox_id"] == "m1" for s in snapshots)  # the refused one wrote nothing
