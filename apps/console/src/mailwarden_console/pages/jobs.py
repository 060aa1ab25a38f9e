"""Jobs (Test & Enable of a whole profile): the recent ones from the bus, one job live, cancel."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from mailwarden_console.client import Refused
from mailwarden_console.pages.mailboxes import profile_names
from mailwarden_console.web import Signed, back

router = APIRouter()


@router.get("/jobs", response_class=HTMLResponse)
async def job_list(ctx: Signed) -> Response:
    if not ctx.session.may("jobs:run", everything=True):
        # This list comes from the console's own view of the bus, not a service: the console checks.
        refused = Refused(403, "needs jobs:run", "see jobs")
        return ctx.render("jobs.html", status_code=403, jobs=[], profiles={}, live=False,
                          hours=ctx.console.settings.job_history_h, refused=refused)  # fmt: skip
    seen = sorted(ctx.console.feed.jobs.values(), key=lambda j: j.started_at, reverse=True)
    return ctx.render("jobs.html", jobs=seen, profiles=await profile_names(ctx), refused=None,
                      live=ctx.console.feed.connected, hours=ctx.console.settings.job_history_h)  # fmt: skip


@router.get("/jobs/open")
async def open_job(ctx: Signed) -> Response:
    job_id = ctx.request.query_params.get("job_id", "").strip()
    return back(f"/jobs/{job_id}" if job_id else "/jobs")


async def _job(ctx: Signed, job_id: str, template: str) -> Response:
    job, refused = await ctx.try_call("mailbox-svc job_get", path={"job_id": job_id})
    status = 200 if job else (refused.status if refused else 404)
    return ctx.render(template, status_code=status, job=job, job_id=job_id, refused=refused)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(ctx: Signed, job_id: str) -> Response:
    return await _job(ctx, job_id, "job.html")


@router.get("/jobs/{job_id}/progress", response_class=HTMLResponse)
async def job_progress(ctx: Signed, job_id: str) -> Response:
    """The live part of the job page, re-read on every event of this job."""
    return await _job(ctx, job_id, "job_progress.html")


@router.post("/jobs/{job_id}/cancel")
async def cancel(ctx: Signed, job_id: str) -> Response:
    await ctx.form()
    try:
        await ctx.call("mailbox-svc job_cancel", path={"job_id": job_id})
    except Refused as exc:
        return back(f"/jobs/{job_id}", exc.by_field().get("job_id", exc.message))
    return back(f"/jobs/{job_id}", "Job cancelled: no more tests are requested.")
