"""Benchmark-only stand-in for the probes: a success for every requested direction, no network.

``bench`` uses it to measure what a test costs besides the test itself (NATS, the database, the
alert fan-out). It never runs by accident: the app refuses it outside ``MW_DEV_MODE`` and logs a
warning at start.
"""

from __future__ import annotations

from datetime import UTC, datetime

from contracts.events import TestCompleted, TestRequested
from contracts.models import Direction, DirectionResult, IncomingProtocol, TestStatus


class FakeSuccessRunner:
    """Same interface as :class:`tester_svc.runner.Runner` (``run``), no connection made."""

    def __init__(self, tester: str) -> None:
        self.tester = tester

    async def run(self, req: TestRequested) -> TestCompleted:
        now = datetime.now(UTC)
        results: dict[Direction, DirectionResult] = {}
        for direction in req.directions:
            incoming = direction is Direction.INCOMING
            protocol = (
                "pop3" if incoming and req.target.incoming_protocol is IncomingProtocol.POP3 else "imap"
            )
            results[direction] = DirectionResult(
                direction=direction,
                protocol=protocol if incoming else "smtp",
                status=TestStatus.SUCCESS,
                started_at=now,
                duration_ms=0.0,
            )
        return TestCompleted(
            test_id=req.test_id,
            mailbox=req.mailbox,
            attempt=req.attempt,
            job_id=req.job_id,
            requested_at=req.requested_at,
            incoming=results.get(Direction.INCOMING),
            outgoing=results.get(Direction.OUTGOING),
            started_at=now,
            finished_at=now,
            tester=self.tester,
        )
