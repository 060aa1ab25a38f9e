"""Runners produce result rows. Today: the sequential baseline and the limit (client loops).

A runner is any callable `(stack, plan) -> RunResult`. The mailwarden end-to-end, overhead and
scale-out runners plug in the same way: start their own processes, add them to the measured
process groups (`stack.process_groups(endpoint) | {"tester": [pid], ...}`), time their tests and
call `bench.results.summarize`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bench.mailboxes import Mailbox
from bench.models import Endpoint, RunResult, Usage, WorkloadReport, WorkloadSpec
from bench.monitor import ResourceMonitor
from bench.results import summarize
from bench.stack import MailStack

__all__ = ["ClientLoopRunner", "RunPlan", "Runner"]

_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class RunPlan:
    """One row to produce: which mailboxes, at which RTT, how many at once."""

    rtt_ms: float
    variant: str
    mailboxes: list[Mailbox]
    mailboxes_file: Path  # the same list, 0600 on disk, for client processes
    count: int  # tests to run (a sample when < len(mailboxes))
    concurrency: int
    label: str | None = None  # row name override, e.g. "warm-up"


class Runner(Protocol):
    """Produces one result row for a plan against a running stack."""

    name: str

    def __call__(self, stack: MailStack, plan: RunPlan) -> RunResult: ...


class ClientLoopRunner:
    """`sequential` (stdlib, one at a time) or `limit` (asyncio, bounded) in a client process."""

    def __init__(self, kind: str, workdir: Path, timeout_s: float = 30.0) -> None:
        if kind not in ("sequential", "limit"):
            raise ValueError(f"unknown client loop {kind!r}")
        self.name = kind
        self.workdir = workdir
        self.timeout_s = timeout_s
        self._runs = 0

    def __call__(self, stack: MailStack, plan: RunPlan) -> RunResult:
        endpoint = stack.endpoint(plan.rtt_ms)
        concurrency = 1 if self.name == "sequential" else plan.concurrency
        report, usage = self._run_client(stack, endpoint, plan, concurrency)
        extrapolate = plan.count < len(plan.mailboxes)
        return summarize(
            runner=plan.label or self.name,
            rtt_ms=plan.rtt_ms,
            via=endpoint.via,
            variant=plan.variant,
            mailboxes=plan.mailboxes,
            outcomes=report.outcomes,
            wall_s=report.wall_s,
            concurrency=concurrency,
            usage=usage,
            total=len(plan.mailboxes) if extrapolate else None,
        )

    def _run_client(
        self, stack: MailStack, endpoint: Endpoint, plan: RunPlan, concurrency: int
    ) -> tuple[WorkloadReport, dict[str, Usage]]:
        self._runs += 1
        spec_path = self.workdir / f"spec-{self.name}-{self._runs}.json"
        out_path = spec_path.with_name(f"report-{self.name}-{self._runs}.json")
        spec = WorkloadSpec(
            runner="sequential" if self.name == "sequential" else "limit",
            endpoint=endpoint,
            mailboxes_file=str(plan.mailboxes_file),
            count=plan.count,
            concurrency=concurrency,
            timeout_s=self.timeout_s,
        )
        spec_path.write_text(spec.model_dump_json())
        groups = stack.process_groups(endpoint)
        with ResourceMonitor(groups) as monitor:
            started = time.monotonic()
            with subprocess.Popen(
                [sys.executable, "-m", "bench.workload", str(spec_path), str(out_path)],
                cwd=_ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            ) as proc:
                assert proc.stderr is not None
                stderr = proc.stderr.read()  # the client prints only on failure
                # wait4: the child's own lifetime CPU (start-up included) for the "other" figure
                _, status, rusage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{self.name} client failed ({proc.returncode}) after "
                f"{time.monotonic() - started:.1f}s:\n{stderr.decode(errors='replace')[-3000:]}"
            )
        report = WorkloadReport.model_validate_json(out_path.read_text())
        usage = monitor.usage()
        usage["client"] = Usage(
            cpu_s=round(report.cpu_s, 3), peak_rss_mb=round(report.peak_rss_mb, 1), processes=1
        )
        # Busy CPU of the whole machine minus what we measured: other load (or processes we
        # missed) during the run. Large values make a row suspect.
        measured = sum(u.cpu_s for u in usage.values()) - report.cpu_s
        measured += rusage.ru_utime + rusage.ru_stime
        usage["other"] = Usage(
            cpu_s=round(max(monitor.machine_busy_s - measured, 0.0), 3), peak_rss_mb=0.0, processes=0
        )
        return report, usage
