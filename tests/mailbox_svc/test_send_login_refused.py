"""sender-svc's SMTP server refused a mailbox's login: mailbox-svc tests the outgoing side again,
so the test policy decides (retry or disable), the Outgoing Email Status follows and alert-svc
alerts on the test's result, as after a failed Test & Enable."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from mailbox_helpers import MakeHarness, mailbox_body

from contracts.errors import ErrorCode
from contracts.models import TestError as SendError
from contracts.outgoing import MailboxSendLoginRefused


async def test_a_refused_send_login_tests_the_outgoing_side_again_once(make_harness: MakeHarness) -> None:
    async with make_harness(retry_interval_s=0.1) as h:
        await h.profile()
        await h.org_settings(approved_users_only=False)
        await h.http.post(
            "/mailboxes", json=mailbox_body(1, mailbox_id="m1", outgoing_delivery="server_side_sync")
        )
        await h.http.post("/mailboxes/m1/test")
        (req,) = await h.test_requests(1)
        await h.complete(req)
        await h.wait_mailbox("m1", lambda m: m["enabled_outgoing"] and m["pending_test_id"] is None)

        refused = MailboxSendLoginRefused(
            mailbox=req.mailbox,
            error=SendError(
                code=ErrorCode.AUTH_FAILED, step="connect", transient=False, scope="mailbox", message="535"
            ),
            login_id="mailbox:m1:v2",
            idempotency_key="k1",
            refused_at=datetime.now(UTC),
        )
        await h.publish(refused)
        (retest,) = await h.test_requests(1)
        assert [d.value for d in retest.directions] == ["outgoing"] and retest.test_id != req.test_id
        await h.publish(refused, event_id=uuid.uuid4())  # another send found out meanwhile: a test is pending
        assert await h.no_more_requests(0.5)
        await h.complete(retest, outgoing=ErrorCode.AUTH_FAILED)
        mb = await h.wait_mailbox("m1", lambda m: m["pending_test_id"] is None)
        assert (mb["outgoing_status"], mb["enabled_outgoing"]) == ("failure", False)
        assert (mb["incoming_status"], mb["enabled_incoming"]) == ("success", True)
