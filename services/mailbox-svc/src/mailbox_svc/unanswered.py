"""The result of a test that never answered: what the watchdog applies after its last resend.

It goes through the result handler like any result (its run stored under the test's id, one
MailboxStatusChanged), so a real result arriving later is a redelivery: not stored, not applied.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from contracts.errors import ErrorCode
from contracts.events import ProfileSnapshot, TestCompleted
from contracts.models import Direction, DirectionResult, IncomingProtocol, TestError, TestStatus
from mailbox_svc.documents import MailboxDoc
from mailbox_svc.testing import applicable_directions, mailbox_ref

TESTER = "mailbox-svc/watchdog"
"""Who reported it (``TestCompleted.tester``): no tester did."""
STEP = "result"
"""The step that failed: waiting for the tester's result."""


def unanswered(doc: MailboxDoc, profile: ProfileSnapshot, resends: int, now: datetime) -> TestCompleted:
    """A failure with ``no_result`` in each direction of ``doc``'s pending test."""
    message = (
        f"No result came back for the test, requested {resends + 1} time(s): "
        "the tester never answered or its result was lost."
    )
    error = TestError.of(ErrorCode.NO_RESULT, STEP, message)
    incoming: Literal["imap", "pop3"] = (
        "pop3" if profile.incoming_protocol is IncomingProtocol.POP3 else "imap"
    )
    protocols: dict[Direction, Literal["imap", "pop3", "smtp"]] = {
        Direction.INCOMING: incoming,
        Direction.OUTGOING: "smtp",
    }
    results = {
        d: DirectionResult(
            direction=d,
            protocol=protocols[d],
            status=TestStatus.FAILURE,
            error=error,
            started_at=now,
            duration_ms=0.0,
        )
        for d in (Direction(name) for name in doc.pending_directions or applicable_directions(doc))
    }
    return TestCompleted(
        test_id=doc.pending_test_id or "",
        mailbox=mailbox_ref(doc, profile),
        attempt=doc.pending_attempt or 1,
        job_id=doc.pending_job_id,
        incoming=results.get(Direction.INCOMING),
        outgoing=results.get(Direction.OUTGOING),
        started_at=now,
        finished_at=now,
        tester=TESTER,
    )
