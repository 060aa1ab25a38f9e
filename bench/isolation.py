"""The `isolation` row: unrelated tests while a job waits on a server that never answers.

A second profile points at a listener on 127.0.0.2 that accepts connections and never says a
word (IMAPS and SMTP), with the default per-host limit (10 connections). Its D mailboxes are
created and approved through the public API and "Test & Enable all" is started on them; once
the job's tests are queued, K single tests ("Test & Enable" one mailbox) of the bench profile's
mailboxes, whose server works, are started one after another. Each one's latency is its
TestRequested on the bus -> its MailboxStatusChanged on the bus, as in the other rows; the row
reports their percentiles (the issue's target: p99 <= 2 s), then cancels the dead job.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from nats.aio.msg import Msg

from bench.e2e import MailwardenBench, _errors
from bench.mailboxes import DOMAIN
from bench.models import Outcome, RunResult
from bench.monitor import ResourceMonitor
from bench.results import summarize
from bench.runners import RunPlan
from bench.stack import MailStack
from bench.system import TesterConfig, bench_profile, bus_quiet, connect, rpc

DEAD_HOST = "127.0.0.2"


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept and never answer: a server that is there and dead."""
    try:
        while await reader.read(4096):
            pass
    except asyncio.CancelledError:
        pass  # the row is over: its loop closes the connections still open
    finally:
        writer.close()


def _has(seen: dict[str, Any], key: str) -> Callable[[], bool]:
    return lambda: key in seen


class IsolationRunner:
    name = "isolation"

    def __init__(self, bench: MailwardenBench, testers: TesterConfig, dead: int, unrelated: int) -> None:
        self.bench = bench
        self.testers = testers
        self.dead = dead
        self.unrelated = unrelated

    def __call__(self, stack: MailStack, plan: RunPlan) -> RunResult:
        system = self.bench.ensure(plan.mailboxes)
        system.set_testers(self.testers)
        groups = stack.process_groups(stack.endpoint(plan.rtt_ms)) | system.process_groups()
        return asyncio.run(self._run(stack, plan, groups))

    async def _run(self, stack: MailStack, plan: RunPlan, groups: dict[str, list[int]]) -> RunResult:
        system = self.bench.system
        assert system is not None
        server = await asyncio.start_server(_silent, DEAD_HOST, 0)
        port = server.sockets[0].getsockname()[1]
        nc = await connect(system.nats.url)
        try:
            await self.bench._prepare_row(nc, stack.endpoint(plan.rtt_ms), plan.mailboxes)
            dead_profile = await self._dead_profile(nc, port)
            requested: dict[str, tuple[str, str | None, float]] = {}
            status: dict[str, tuple[float, dict[str, Any]]] = {}
            seen = asyncio.Event()  # set on every message

            async def until(done: Callable[[], bool], timeout_s: float) -> None:
                async with asyncio.timeout(timeout_s):
                    while not done():
                        seen.clear()
                        await seen.wait()

            async def on_requested(msg: Msg) -> None:
                data = json.loads(msg.data)["data"]
                requested.setdefault(
                    data["test_id"], (data["mailbox"]["mailbox_id"], data.get("job_id"), time.perf_counter())
                )
                seen.set()

            async def on_status(msg: Msg) -> None:
                data = json.loads(msg.data)["data"]
                if data.get("test_id"):
                    status.setdefault(data["test_id"], (time.perf_counter(), data))
                    seen.set()

            subs = [
                await nc.subscribe("mailwarden.test.requested", cb=on_requested),
                await nc.subscribe("mailwarden.mailbox.status_changed", cb=on_status),
            ]
            job = await rpc(nc, "mailbox-svc", "job_start", {"profile_id": dead_profile})
            # The dead job's tests are queued and running before the first single test (all of them
            # when the job is smaller than 10: waiting for 10 of 2 timed out after 120 s).
            queued = min(10, self.dead)
            await until(lambda: sum(1 for _, j, _ in requested.values() if j == job["job_id"]) >= queued, 120)
            ours = plan.mailboxes[: self.unrelated]
            index = {m.user: i for i, m in enumerate(plan.mailboxes)}
            with ResourceMonitor(groups) as monitor:
                t0 = time.perf_counter()
                tests = []
                for m in ours:  # one after another, each waited for: a user's single tests
                    accepted = await rpc(nc, "mailbox-svc", "test", {"mailbox_id": m.user})
                    tests.append(accepted["test_id"])
                    await until(_has(status, str(accepted["test_id"])), 300)
                wall = time.perf_counter() - t0
            dead_done = sum(1 for t, (_, j, _) in requested.items() if j == job["job_id"] and t in status)
            await rpc(nc, "mailbox-svc", "job_cancel", {"job_id": job["job_id"]})
            for sub in subs:
                await sub.unsubscribe()
        finally:
            await nc.close()
            server.close()
        outcomes = []
        for test_id in tests:
            mailbox_id, _, t_req = requested[test_id]
            t_status, data = status[test_id]
            errors = _errors(data)
            outcomes.append(
                Outcome(index=index[mailbox_id], ok=not errors, latency_s=t_status - t_req, errors=errors)
            )
        return summarize(
            runner=self.name,
            rtt_ms=plan.rtt_ms,
            via="direct + a dead host",
            variant=plan.variant,
            mailboxes=plan.mailboxes,
            outcomes=outcomes,
            wall_s=wall,
            concurrency=self.testers.concurrency * self.testers.processes,
            usage=monitor.usage(),
            extra={
                "dead_job_mailboxes": self.dead,
                "dead_job_tests_done_meanwhile": dead_done,
                "latency": "single tests of a working server: TestRequested -> MailboxStatusChanged, "
                "while a job waits on a host that never answers",
            },
        )

    async def _dead_profile(self, nc: Any, port: int) -> str:
        """A profile on the dead host with D approved mailboxes (made once per benchmark run)."""
        if self.bench.dead_profile_id is not None:
            return self.bench.dead_profile_id
        ports = sorted({*self.bench.allowed_ports, port})
        profile_id = await bench_profile(nc, "dead server", DEAD_HOST, (port, port), ports)
        for start in range(0, self.dead, 1000):
            ids = [f"dead{i:05d}" for i in range(start, min(self.dead, start + 1000))]
            items = [
                {
                    "mailbox_id": i,
                    "email": f"{i}@{DOMAIN}",
                    "owner": {"kind": "user", "id": i, "name": i, "email": f"{i}@{DOMAIN}"},
                    "profile_id": profile_id,
                    "credentials": {"username": i, "password": "never-used"},
                }
                for i in ids
            ]
            await rpc(nc, "mailbox-svc", "create_many", {"mailboxes": items, "approve": True})
        await bus_quiet(nc)
        self.bench.dead_profile_id = profile_id
        return str(profile_id)
