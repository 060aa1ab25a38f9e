"""The `mailwarden`, `overhead` and `scale-out/k` rows: bulk Test & Enable through the public interface.

One `MailwardenBench` per benchmark run starts the system once (`bench.system`), sets the org
settings, creates one profile and N approved mailboxes (batch create with approve), all over NATS
request-reply. Each row then points the profile at the row's endpoint (profile update), makes
sure the tester processes have the row's configuration, starts "Test & Enable all mailboxes of
the profile" (the job operation) and watches the bus until every mailbox has its
MailboxStatusChanged and an AlertRaised for that test.

Per-test latency: TestRequested seen on the bus (the relay published it after the job stored the
mailbox's pending test) -> MailboxStatusChanged seen (published after the result was stored).
Database operations: SecantusDB's `serverStatus` opcounters before and after the row.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from nats.aio.client import Client
from nats.aio.msg import Msg

from bench.docwrites import DocumentWrites
from bench.mailboxes import Mailbox
from bench.models import Endpoint, Outcome, RunResult, Usage
from bench.monitor import ResourceMonitor
from bench.results import percentile, summarize
from bench.runners import RunPlan
from bench.stack import MailStack
from bench.system import CORE, MailwardenSystem, TesterConfig, bench_profile, bus_quiet, connect, rpc

__all__ = ["MailwardenBench", "MailwardenRunner"]

CHUNK = 1000  # the API's largest batch
MAX_CONNECTIONS = 300  # the profile's per-host limit, at its maximum


def _log(text: str) -> None:
    import sys

    print(text, file=sys.stderr, flush=True)


@dataclass
class _Watch:
    """What the bus showed during one row, keyed by test id."""

    requested: dict[str, tuple[str, str | None, float]] = field(default_factory=dict)  # mailbox, job, t
    status: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    alerted: dict[str, float] = field(default_factory=dict)
    job_id: str | None = None
    expected: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    db: psutil.Process | None = None  # SecantusDB: its CPU is noted every `step` statuses
    marks: list[tuple[int, float]] = field(default_factory=list)  # (statuses seen, db CPU s)
    _counted: bool = False
    _mine: set[str] = field(default_factory=set)  # the job's tests seen requested
    _waiting: set[str] = field(default_factory=set)  # of them, those without a status or an alert

    @property
    def step(self) -> int:
        return 1000 if self.expected >= 2000 else max(self.expected // 4, 1)

    def mark(self) -> None:
        """Note the database's CPU at every `step` statuses: its cost per test, thousand by thousand."""
        seen = len(self.status)
        if self.db is not None and (seen == 0 or seen % self.step == 0):
            with contextlib.suppress(psutil.Error):
                t = self.db.cpu_times()
                self.marks.append((seen, t.user + t.system))

    def db_ms_per_test_by_step(self) -> list[float]:
        return [
            round(1000 * (c1 - c0) / max(n1 - n0, 1), 2)
            for (n0, c0), (n1, c1) in zip(self.marks, self.marks[1:], strict=False)
        ]

    def check(self, test_id: str | None = None) -> None:
        """Set `done` once every test of the job has its status and its alert.

        Counted as messages arrive (the first call after the job id is known counts what came
        before it): a scan of every test per message cost the watcher, on the same cores as the
        system it measures, time quadratic in the tests of the row.
        """
        if self.job_id is None:
            return
        if not self._counted:
            self._counted = True
            for t in self.requested:
                self._note(t)
        elif test_id is not None:
            self._note(test_id)
        if len(self._mine) >= self.expected and not self._waiting:
            self.done.set()

    def _note(self, test_id: str) -> None:
        requested = self.requested.get(test_id)
        if requested is None or requested[1] != self.job_id:
            return
        self._mine.add(test_id)
        if test_id in self.status and test_id in self.alerted:
            self._waiting.discard(test_id)
        else:
            self._waiting.add(test_id)


def _errors(data: dict[str, Any]) -> tuple[str, ...]:
    out: list[str] = []
    for prefix, status_key, error_key in (
        ("imap", "incoming_status", "incoming_error"),
        ("smtp", "outgoing_status", "outgoing_error"),
    ):
        if data.get(status_key) == "success":
            continue
        code = (data.get(error_key) or {}).get("code") or data.get(status_key)
        out.append(f"{prefix}_auth" if code == "auth_failed" else f"{prefix}_error:{code}")
    return tuple(out)


class MailwardenBench:
    """The running system and its set-up state, shared by every end-to-end row of one run."""

    def __init__(
        self,
        workdir: Path,
        stack: MailStack,
        rtts: Sequence[float],
        n_mailboxes: int,
        system_env: dict[str, str] | None = None,
    ) -> None:
        self.system_env = system_env or {}
        self.workdir = workdir
        self.stack = stack
        self.rtts = list(dict.fromkeys(rtts))  # every RTT a row may use: its ports are allowed
        self.n = n_mailboxes
        self.system: MailwardenSystem | None = None
        self.profile_id: str | None = None
        self.profile_ports: tuple[int, int] | None = None
        self.stored: dict[str, str] = {}  # user -> password stored in mailbox-svc
        self.tests_by_tester: int = 0
        self.setup_s: float = 0.0
        self.create_s: float = 0.0  # mailbox-svc.create_many (approve: true) calls, summed over chunks
        self.settled_s: float = 0.0  # first create_many -> the bus quiet (every event published and consumed)
        self.setup_reported = False
        self.setup_n = 0
        self.allowed_ports: list[int] = []  # the org's custom port list (the isolation row adds one)
        self.dead_profile_id: str | None = None  # the isolation row's profile on a dead host

    def close(self) -> None:
        if self.system is not None:
            self.system.stop()
            self.system = None

    def ensure(self, mailboxes: list[Mailbox]) -> MailwardenSystem:
        if self.system is None:
            started = time.monotonic()
            core = ", ".join(spec.name for spec in CORE)
            _log(
                f"  starting mailwarden (nats, SecantusDB, {len(CORE)} services: {core}; tester-svc per row) ..."
            )
            self.system = MailwardenSystem(
                self.workdir / "mailwarden", str(self.stack.certs.ca), self.system_env
            ).start()
            asyncio.run(self._setup(mailboxes))
            self.setup_s = time.monotonic() - started
            n = self.setup_n = len(mailboxes)
            _log(
                f"  mailwarden set up with {n:,} approved mailboxes in {self.setup_s:.0f}s "
                f"(created approved through the API: {n / max(self.create_s, 1e-9):.0f}/s in the calls, "
                f"{n / max(self.settled_s, 1e-9):.0f}/s until every event was published and consumed)"
            )
        return self.system

    def setup_figures(self) -> dict[str, float | int | str]:
        """The set-up's figures, reported with the first end-to-end row (the set-up runs once)."""
        n = self.setup_n
        return {
            "setup_mailboxes": n,
            "setup_s": round(self.setup_s, 1),
            "setup_create_approve_per_s": round(n / max(self.create_s, 1e-9), 1),
            "setup_settled_per_s": round(n / max(self.settled_s, 1e-9), 1),
        }

    async def _setup(self, mailboxes: list[Mailbox]) -> None:
        assert self.system is not None
        ports = sorted(
            {
                p
                for rtt in self.rtts
                for ep in [self.stack.endpoint(rtt)]
                for p in (ep.imaps_port, ep.smtp_port)
            }
        )
        self.allowed_ports = ports
        first = self.stack.endpoint(self.rtts[0])
        nc = await connect(self.system.nats.url)
        try:
            self.profile_ports = (first.imaps_port, first.smtp_port)
            advanced = {"max_concurrent_connections": MAX_CONNECTIONS}
            self.profile_id = await bench_profile(
                nc, "bench", first.host, self.profile_ports, ports, advanced
            )
            began = time.perf_counter()
            for i in range(0, len(mailboxes), CHUNK):
                chunk = mailboxes[i : i + CHUNK]
                items = [
                    {
                        "mailbox_id": m.user,
                        "email": m.address,
                        "owner": {"kind": "user", "id": m.user, "name": m.user, "email": m.address},
                        "profile_id": self.profile_id,
                        "credentials": {"username": m.user, "password": m.password},
                    }
                    for m in chunk
                ]
                t0 = time.perf_counter()
                # created approved: one insert per mailbox with its MailboxApproved
                result = await rpc(nc, "mailbox-svc", "create_many", {"mailboxes": items, "approve": True})
                self.create_s += time.perf_counter() - t0
                self.stored.update({m.user: m.password for m in chunk})
                if result.get("refused") or len(result.get("done", [])) != len(chunk):
                    raise RuntimeError(f"creation refused: {result.get('refused', [])[:3]}")
            await bus_quiet(nc, settle_s=0.25)
            self.settled_s = time.perf_counter() - began
        finally:
            await nc.close()

    async def _prepare_row(self, nc: Client, endpoint: Endpoint, mailboxes: list[Mailbox]) -> None:
        """Point the profile at this row's endpoint and store this variant's passwords."""
        ports = (endpoint.imaps_port, endpoint.smtp_port)
        changed = False
        if ports != self.profile_ports:
            await rpc(
                nc,
                "profile-svc",
                "update",
                {
                    "profile_id": self.profile_id,
                    "incoming": {"port": ports[0]},
                    "outgoing": {"port": ports[1]},
                },
            )
            self.profile_ports = ports
            await bus_quiet(nc)  # mailbox-svc knows the profile's new server
            # A stored login goes only to the server it was entered for: the admin enters them again.
            self.stored.clear()
            changed = True
        todo = [m for m in mailboxes if self.stored.get(m.user) != m.password]
        limit = asyncio.Semaphore(16)

        async def store(m: Mailbox) -> None:
            async with limit:
                body = {"mailbox_id": m.user, "changes": {"credentials": {"password": m.password}}}
                await rpc(nc, "mailbox-svc", "update", body)
                self.stored[m.user] = m.password

        await asyncio.gather(*(store(m) for m in todo))
        if changed or todo:
            await bus_quiet(nc)


class MailwardenRunner:
    """One end-to-end row: `mailwarden` (real tester), `overhead` (fake tester), `scale-out/k`."""

    def __init__(
        self,
        bench: MailwardenBench,
        name: str,
        testers: TesterConfig,
        timeout_s: float = 900.0,
        total: int | None = None,
    ) -> None:
        self.total = total  # N the row stands for: wall time is extrapolated when > the mailboxes run
        self.bench = bench
        self.name = name
        self.testers = testers
        self.timeout_s = timeout_s

    def __call__(self, stack: MailStack, plan: RunPlan) -> RunResult:
        system = self.bench.ensure(plan.mailboxes)
        before = system.tester_config
        system.set_testers(self.testers)
        if system.tester_config is not before:
            self.bench.tests_by_tester = 0
        endpoint = stack.endpoint(plan.rtt_ms)
        groups = stack.process_groups(endpoint) | system.process_groups()
        return asyncio.run(self._run(stack, plan, endpoint, groups))

    async def _run(
        self, stack: MailStack, plan: RunPlan, endpoint: Endpoint, groups: dict[str, list[int]]
    ) -> RunResult:
        system = self.bench.system
        assert system is not None and self.bench.profile_id is not None
        nc = await connect(system.nats.url)
        try:
            await self.bench._prepare_row(nc, endpoint, plan.mailboxes)
            await bus_quiet(nc)
            watch = _Watch(expected=len(plan.mailboxes))
            mongo = groups.get("mongo") or []
            watch.db = psutil.Process(mongo[0]) if mongo else None
            watch.mark()
            subs = await self._watch(nc, watch)
            ops0 = system.opcounters()
            cpu0 = _self_cpu()
            with DocumentWrites(system.mongo.uri) as docs, ResourceMonitor(groups) as monitor:
                t0 = time.perf_counter()
                job = await rpc(nc, "mailbox-svc", "job_start", {"profile_id": self.bench.profile_id})
                watch.job_id = job["job_id"]
                watch.check()
                try:
                    await asyncio.wait_for(watch.done.wait(), self.timeout_s)
                except TimeoutError:
                    raise RuntimeError(
                        f"{self.name}: {len(watch.status)} statuses, {len(watch.alerted)} alerts of "
                        f"{watch.expected} after {self.timeout_s:.0f}s"
                    ) from None
                wall = time.perf_counter() - t0
            cpu = _self_cpu() - cpu0
            ops1 = system.opcounters()
            for sub in subs:
                await sub.unsubscribe()
            await bus_quiet(nc)  # the job's tail (summary, alert channels) stays out of the next row
        finally:
            await nc.close()
        self.bench.tests_by_tester += watch.expected
        result = self._result(plan, endpoint, watch, wall, monitor, cpu, ops0, ops1)
        if not self.bench.setup_reported:
            self.bench.setup_reported = True
            result.extra.update(self.bench.setup_figures())
        by_step = watch.db_ms_per_test_by_step()
        result.extra["db_cpu_step"] = watch.step
        result.extra["db_cpu_ms_per_test_by_step"] = json.dumps(by_step)
        if by_step:
            _log(
                f"  {self.name}: SecantusDB ms/test per {watch.step} statuses: {' / '.join(map(str, by_step))}"
            )
        try:  # read after the row (and after its opcounters): the count costs the row nothing
            result.extra.update(docs.per_test(len(plan.mailboxes)))
            result.extra["docs_written"] = json.dumps(docs.breakdown(), sort_keys=True)
        finally:
            docs.close()
        return result

    async def _watch(self, nc: Client, watch: _Watch) -> list[Any]:
        async def on_requested(msg: Msg) -> None:
            now = time.perf_counter()
            data = json.loads(msg.data)["data"]
            watch.requested.setdefault(
                data["test_id"], (data["mailbox"]["mailbox_id"], data.get("job_id"), now)
            )
            watch.check(data["test_id"])

        async def on_status(msg: Msg) -> None:
            now = time.perf_counter()
            data = json.loads(msg.data)["data"]
            if data.get("test_id") and data["test_id"] not in watch.status:
                watch.status[data["test_id"]] = (now, data)
                watch.mark()
                watch.check(data["test_id"])

        async def on_alert(msg: Msg) -> None:
            now = time.perf_counter()
            data = json.loads(msg.data)["data"]
            if data.get("test_id") and data.get("state") == "open":
                watch.alerted.setdefault(data["test_id"], now)
                watch.check(data["test_id"])

        return [
            await nc.subscribe("mailwarden.test.requested", cb=on_requested),
            await nc.subscribe("mailwarden.mailbox.status_changed", cb=on_status),
            await nc.subscribe("mailwarden.alerts.>", cb=on_alert),
        ]

    def _result(
        self,
        plan: RunPlan,
        endpoint: Endpoint,
        watch: _Watch,
        wall: float,
        monitor: ResourceMonitor,
        client_cpu: float,
        ops0: dict[str, int],
        ops1: dict[str, int],
    ) -> RunResult:
        index = {m.user: i for i, m in enumerate(plan.mailboxes)}
        outcomes: list[Outcome] = []
        alert_lat: list[float] = []
        for test_id, (mailbox_id, job, t_req) in watch.requested.items():
            if job != watch.job_id:
                continue
            t_status, data = watch.status[test_id]
            errors = _errors(data)
            outcomes.append(
                Outcome(index=index[mailbox_id], ok=not errors, latency_s=t_status - t_req, errors=errors)
            )
            alert_lat.append(watch.alerted[test_id] - t_req)
        alert_lat.sort()
        usage = monitor.usage()
        usage["client"] = Usage(
            cpu_s=round(client_cpu, 3),
            peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            processes=1,
        )
        measured = sum(u.cpu_s for u in usage.values())
        usage["other"] = Usage(
            cpu_s=round(max(monitor.machine_busy_s - measured, 0.0), 3), peak_rss_mb=0.0, processes=0
        )
        n = len(outcomes)
        delta = {k: ops1.get(k, 0) - ops0.get(k, 0) for k in ops1}
        writes = delta.get("insert", 0) + delta.get("update", 0) + delta.get("delete", 0)
        reads = delta.get("query", 0) + delta.get("getmore", 0)
        services = ("profile-svc", "mailbox-svc", "tester-svc", "alert-svc")
        per_test = {g: 1000 * usage[g].cpu_s / max(n, 1) for g in (*services, "nats", "mongo") if g in usage}
        extra: dict[str, float | int | str] = {
            "db_writes_per_test": round(writes / max(n, 1), 2),
            "db_reads_per_test": round(reads / max(n, 1), 2),
            "db_commands_per_test": round(delta.get("command", 0) / max(n, 1), 2),
            "db_opcounters": json.dumps(delta, sort_keys=True),
            "p50_alert_ms": round(1000 * percentile(alert_lat, 50), 1),
            "p95_alert_ms": round(1000 * percentile(alert_lat, 95), 1),
            "services_cpu_ms_per_test": round(sum(per_test.get(s, 0.0) for s in services), 2),
            "bus_cpu_ms_per_test": round(per_test.get("nats", 0.0), 2),
            "db_cpu_ms_per_test": round(per_test.get("mongo", 0.0), 2),
            **{f"{g}_cpu_ms_per_test": round(v, 2) for g, v in per_test.items()},
            "tester_processes": self.testers.processes,
            "tester_rss_mb_end": round(_rss_mb(self.bench.system.process_groups()["tester-svc"]), 1)
            if self.bench.system
            else 0.0,
            "tester_tests_served": self.bench.tests_by_tester,
            "latency": "TestRequested on the bus -> MailboxStatusChanged on the bus",
        }
        return summarize(
            runner=plan.label or self.name,
            rtt_ms=plan.rtt_ms,
            via="no network" if self.testers.fake else endpoint.via,
            variant=plan.variant,
            mailboxes=plan.mailboxes,
            outcomes=outcomes,
            wall_s=wall,
            concurrency=self.testers.concurrency * self.testers.processes,
            usage=usage,
            total=self.total if self.total and self.total > n else None,
            extra=extra,
        )


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20
