"""A cancelled job's test that has not started is withdrawn by the tester: no connection is made."""

from __future__ import annotations

import json

from contracts.envelope import Envelope, make_envelope
from contracts.events import TestCompleted, TestRequested
from contracts.models import Direction
from tester_svc.handlers import TestRequestedHandler
from tester_svc.jobgate import JOB_GET, JobGate

from .conftest import make_request


class Runner:
    def __init__(self) -> None:
        self.ran: list[str] = []

    async def run(self, req: TestRequested) -> TestCompleted:
        self.ran.append(req.test_id)
        from tester_svc.handlers import withdrawn  # any well-formed result will do here

        return withdrawn(req, "t").model_copy(update={"withdrawn": False})


def answering(states: dict[str, str], asked: list[str]) -> object:
    async def ask(subject: str, body: bytes, timeout_s: float) -> bytes:
        assert subject == JOB_GET
        job_id = json.loads(body)["job_id"]
        asked.append(job_id)
        if job_id not in states:
            raise TimeoutError("no answer")
        return json.dumps({"ok": True, "result": {"job_id": job_id, "state": states[job_id]}}).encode()

    return ask


async def test_tests_of_a_cancelled_job_are_withdrawn_unrun() -> None:
    asked: list[str] = []
    published: list[Envelope[TestCompleted]] = []

    async def publish(env: Envelope[TestCompleted]) -> None:
        published.append(env)

    runner = Runner()
    gate = JobGate(answering({"jobC": "cancelled", "jobR": "running"}, asked), ttl_s=60)  # type: ignore[arg-type]
    handler = TestRequestedHandler(runner, publish, "tester-svc", gate)
    for test_id, job_id in (
        ("c1", "jobC"),
        ("c2", "jobC"),
        ("r1", "jobR"),
        ("u1", "jobUnknown"),
        ("n1", None),
    ):
        req = make_request(test_id=test_id, directions=[Direction.INCOMING]).model_copy(
            update={"job_id": job_id}
        )
        await handler(make_envelope(req, "mailbox-svc"))
    assert runner.ran == ["r1", "u1", "n1"]  # running, unknown (mailbox-svc silent) and job-less tests run
    assert [(e.data.test_id, e.data.withdrawn) for e in published] == [
        ("c1", True),
        ("c2", True),
        ("r1", False),
        ("u1", False),
        ("n1", False),
    ]
    assert published[0].data.results == []
    assert asked == ["jobC", "jobR", "jobUnknown"]  # one question per job: the cancel is remembered
