"""The TestRequested handler: run the test, publish TestCompleted, then let the consumer ack.

The result's event id is derived from the test id and attempt, so when a redelivered request is
tested again its result is de-duplicated by JetStream instead of being stored twice.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from contracts.envelope import Envelope, make_envelope
from contracts.events import TestCompleted, TestRequested
from tester_svc.jobgate import JobGate
from tester_svc.orgview import OrgPorts

log = logging.getLogger(__name__)

PublishFn = Callable[[Envelope[Any]], Awaitable[Any]]
RESULT_NAMESPACE = uuid.UUID("5d0c1f6e-4f7e-4a3b-9c1e-7a2f3b8d9e10")


class TestRunner(Protocol):
    """The probes (:class:`tester_svc.runner.Runner`), or the benchmark's fake."""

    async def run(self, req: TestRequested) -> TestCompleted: ...


def withdrawn(req: TestRequested, tester: str) -> TestCompleted:
    """The answer for a test that is not run: no connection, no direction result, nothing to apply."""
    now = datetime.now(UTC)
    return TestCompleted(
        test_id=req.test_id,
        mailbox=req.mailbox,
        attempt=req.attempt,
        job_id=req.job_id,
        requested_at=req.requested_at,
        started_at=now,
        finished_at=now,
        tester=tester,
        withdrawn=True,
    )


def result_event_id(test_id: str, attempt: int) -> uuid.UUID:
    return uuid.uuid5(RESULT_NAMESPACE, f"{test_id}:{attempt}")


class TestRequestedHandler:
    __test__ = False

    def __init__(
        self,
        runner: TestRunner,
        publish: PublishFn,
        producer: str,
        gate: JobGate | None = None,
        org: OrgPorts | None = None,
    ) -> None:
        self.runner = runner
        self.publish = publish
        self.producer = producer
        self.gate = gate
        self.org = org

    async def __call__(self, envelope: Envelope[TestRequested]) -> None:
        req = envelope.data
        if req.job_id and self.gate is not None and await self.gate.cancelled(req.job_id):
            completed = withdrawn(req, self.producer)  # the job was cancelled before this test began
        else:
            if self.org is not None:
                await self.org.ready()  # the org's ports known (SettingsUnknown: retried later)
            completed = await self.runner.run(req)
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # Stopped mid-test (shutdown past its grace period): the steps cut short say nothing
            # about the mailbox. No result; the consumer gives the request back for another tester.
            raise asyncio.CancelledError
        out = make_envelope(
            completed,
            self.producer,
            correlation_id=envelope.correlation_id,
            event_id=result_event_id(req.test_id, req.attempt),
        )
        await self.publish(out)
        log.info(
            "test completed",
            extra={
                "test_id": req.test_id,
                "attempt": req.attempt,
                "succeeded": completed.succeeded,
                "withdrawn": completed.withdrawn,
                "codes": [r.error.code.value for r in completed.results if r.error],
            },
        )
