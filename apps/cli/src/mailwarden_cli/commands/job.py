"""``mailwarden job``: Test & Enable every mailbox of a profile, asynchronously (mailbox-svc)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Annotated, Any

import typer
from nats.aio.msg import Msg
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from contracts.subjects import JOBS
from mailwarden_cli import render
from mailwarden_cli.client import Bus
from mailwarden_cli.options import JsonOut
from mailwarden_cli.runner import emit_json, err, out, run

SERVICE = "mailbox-svc"
POLL_S = 1.0
app = typer.Typer(
    rich_markup_mode=None, help="Bulk test jobs: start, show, cancel, watch.", no_args_is_help=True
)

JobId = Annotated[str, typer.Argument(help="The job id.")]
WaitTimeout = Annotated[float, typer.Option("--wait-timeout", help="Stop watching after this many seconds.")]


def job_counts(job: dict[str, Any]) -> Counter[str]:
    counts: Counter[str] = Counter()
    if job.get("succeeded"):
        counts["success"] = int(job["succeeded"])
    counts.update({k: int(v) for k, v in (job.get("failed") or {}).items()})
    counts.update({k: int(v) for k, v in (job.get("refused") or {}).items()})
    return counts


def _ended_badly(job: dict[str, Any]) -> bool:
    return job.get("state") != "completed" or bool(job.get("failed")) or bool(job.get("refused"))


async def follow(bus: Bus, job_id: str, patience: float) -> dict[str, Any]:
    """Show a progress bar until the job is no longer running (or ``patience`` seconds); return its last view."""
    wake = asyncio.Event()

    async def on_event(_: Msg) -> None:  # any job event: look again now rather than at the next poll
        wake.set()

    sub = await bus.nc.subscribe(f"{JOBS}.>", cb=on_event)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    job: dict[str, Any] = await bus.call(SERVICE, "job_get", {"job_id": job_id})
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=err) as progress:
            task = progress.add_task(f"job {job_id}", total=max(int(job["total"]), 1))
            while True:
                failed = sum((job.get("failed") or {}).values())
                progress.update(
                    task,
                    total=max(int(job["total"]), 1),
                    completed=int(job["done"]) if job["total"] else int(job["state"] != "running"),
                    description=f"job {job['state']}: {job.get('succeeded', 0)} ok, {failed} failed",
                )
                if job["state"] != "running" or loop.time() >= deadline:
                    break
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), timeout=POLL_S)
                except TimeoutError:
                    pass
                job = await bus.call(SERVICE, "job_get", {"job_id": job_id})
    finally:
        if not bus.closed.is_set():
            await sub.unsubscribe()
    return job


def _report(job: dict[str, Any], as_json: bool) -> int:
    if as_json:
        emit_json(job)
    else:
        out.print(render.job_view(job))
        counts = job_counts(job)
        if counts:
            out.print(render.code_summary(counts, "mailboxes by result"))
    return 1 if _ended_badly(job) else 0


@app.command()
def start(
    ctx: typer.Context,
    profile_id: Annotated[str, typer.Argument(help="Test every mailbox of this profile.")],
    watch: Annotated[bool, typer.Option("--watch", help="Follow it to the end with a progress bar.")] = False,
    wait_timeout: WaitTimeout = 600.0,
    as_json: JsonOut = False,
) -> None:
    """Start a job; with --watch, exit 1 unless every mailbox succeeded."""

    async def work(bus: Bus) -> int:
        job = await bus.call(SERVICE, "job_start", {"profile_id": profile_id})
        if not watch:
            if as_json:
                emit_json(job)
            else:
                out.print(f"started job {job['job_id']} ({job['total']} mailbox(es))")
            return 0
        return _report(await follow(bus, job["job_id"], wait_timeout), as_json)

    run(ctx, work)


@app.command()
def show(ctx: typer.Context, job_id: JobId, as_json: JsonOut = False) -> None:
    """Show a job's progress and counts by error code."""

    async def work(bus: Bus) -> None:
        job = await bus.call(SERVICE, "job_get", {"job_id": job_id})
        if as_json:
            emit_json(job)
        else:
            out.print(render.job_view(job))
            if counts := job_counts(job):
                out.print(render.code_summary(counts, "mailboxes by result"))

    run(ctx, work)


@app.command()
def cancel(ctx: typer.Context, job_id: JobId, as_json: JsonOut = False) -> None:
    """Cancel a job: no more tests are requested (those running finish)."""

    async def work(bus: Bus) -> None:
        job = await bus.call(SERVICE, "job_cancel", {"job_id": job_id})
        if as_json:
            emit_json(job)
        else:
            out.print(render.job_view(job))

    run(ctx, work)


@app.command()
def watch(
    ctx: typer.Context, job_id: JobId, wait_timeout: WaitTimeout = 600.0, as_json: JsonOut = False
) -> None:
    """Follow a job to its end, then a summary by error code; exit 1 unless every mailbox succeeded."""

    async def work(bus: Bus) -> int:
        return _report(await follow(bus, job_id, wait_timeout), as_json)

    run(ctx, work)
