"""The client side of one run, in its own process so its CPU and memory are its own.

`python -m bench.workload SPEC.json OUT.json` runs `spec.count` mailbox tests from
`spec.first` either one after another with the standard library (`sequential`) or as a bare
asyncio loop with at most `spec.concurrency` tests in flight (`limit`: no bus, no database),
and writes a `WorkloadReport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
import time
from pathlib import Path

from bench.clients import check_async, check_sync, client_context
from bench.mailboxes import Mailbox, load_mailboxes
from bench.models import Outcome, WorkloadReport, WorkloadSpec

__all__ = ["main", "run_limit", "run_sequential"]


def run_sequential(spec: WorkloadSpec, mailboxes: list[Mailbox]) -> list[Outcome]:
    """One mailbox after another (imaplib + smtplib)."""
    ctx = client_context(spec.endpoint.ca_file)
    return [
        check_sync(spec.endpoint, mailboxes[i], i, ctx, spec.timeout_s)
        for i in range(spec.first, spec.first + spec.count)
    ]


async def run_limit(spec: WorkloadSpec, mailboxes: list[Mailbox]) -> list[Outcome]:
    """Every test as a task; a semaphore keeps at most `concurrency` in flight."""
    ctx = client_context(spec.endpoint.ca_file)
    gate = asyncio.Semaphore(spec.concurrency)

    async def one(i: int) -> Outcome:
        async with gate:
            return await check_async(spec.endpoint, mailboxes[i], i, ctx, spec.timeout_s)

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(one(i)) for i in range(spec.first, spec.first + spec.count)]
    return [t.result() for t in tasks]


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _raise_nofile_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> int:
    """Run the spec, write the report."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m bench.workload SPEC.json OUT.json", file=sys.stderr)
        return 2
    spec = WorkloadSpec.model_validate_json(Path(args[0]).read_text())
    mailboxes = load_mailboxes(Path(spec.mailboxes_file))
    if spec.first + spec.count > len(mailboxes):
        print(f"spec asks for mailboxes beyond the {len(mailboxes)} in the file", file=sys.stderr)
        return 2
    _raise_nofile_limit()
    cpu0, t0 = _cpu_s(), time.perf_counter()
    if spec.runner == "sequential":
        outcomes = run_sequential(spec, mailboxes)
    else:
        outcomes = asyncio.run(run_limit(spec, mailboxes))
    wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    report = WorkloadReport(wall_s=wall, cpu_s=cpu, peak_rss_mb=peak_mb, outcomes=outcomes)
    Path(args[1]).write_text(report.model_dump_json())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
