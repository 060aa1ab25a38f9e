"""HTTP routes and the same operations over NATS request-reply (mailwarden.rpc.mailbox-svc.<op>)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from contracts.models import Identifier
from mailbox_svc.jobs import JobRunner
from mailbox_svc.models import (
    BulkResult,
    ChangeManyRequest,
    HistoryRequest,
    JobCreate,
    JobRequest,
    JobView,
    ListRequest,
    MailboxBatchCreate,
    MailboxCreate,
    MailboxPage,
    MailboxPatch,
    MailboxRequest,
    MailboxView,
    RotateRequest,
    RotationReport,
    Selection,
    TestAccepted,
    TestHistory,
    UpdateRequest,
)
from mailbox_svc.operations import MailboxOperations
from mailbox_svc.rotation import rotate_credentials
from mailwarden_runtime.crypto import KeyRing
from mailwarden_runtime.service import ServiceRuntime

MailboxId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


def build_routers(ops: MailboxOperations, jobs: JobRunner, ring: KeyRing) -> list[APIRouter]:
    r = APIRouter(tags=["mailboxes"])
    j = APIRouter(tags=["jobs"])

    @r.post("/mailboxes", status_code=status.HTTP_201_CREATED, summary="Create a mailbox")
    async def create(body: MailboxCreate) -> MailboxView:
        return await ops.create(body)

    @r.post("/mailboxes/batch", status_code=status.HTTP_201_CREATED, summary="Create many mailboxes")
    async def create_many(body: MailboxBatchCreate) -> BulkResult:
        return await ops.create_many(body)

    @r.get("/mailboxes", summary="List mailboxes (filter, keyset pagination with `after`)")
    async def list_(q: Annotated[ListRequest, Query()]) -> MailboxPage:
        return await ops.list(q)

    @r.get("/mailboxes/{mailbox_id}", summary="Read a mailbox (passwords are never shown)")
    async def get(mailbox_id: MailboxId) -> MailboxView:
        return await ops.get(mailbox_id)

    @r.patch("/mailboxes/{mailbox_id}", summary="Change a mailbox; an omitted password is kept")
    async def update(mailbox_id: MailboxId, body: MailboxPatch) -> MailboxView:
        return await ops.update(mailbox_id, body)

    @r.post("/mailboxes/{mailbox_id}/deactivate", summary="Deactivate a mailbox")
    async def deactivate(mailbox_id: MailboxId) -> MailboxView:
        return await ops.deactivate(mailbox_id)

    @r.get("/mailboxes/{mailbox_id}/tests", summary="History of test runs, newest first")
    async def history(mailbox_id: MailboxId, limit: Annotated[int, Query(ge=1, le=500)] = 20) -> TestHistory:
        return await ops.history(HistoryRequest(mailbox_id=mailbox_id, limit=limit))

    @r.post("/mailboxes/{mailbox_id}/test", status_code=202, summary="Test & Enable one mailbox")
    async def test_one(mailbox_id: MailboxId) -> TestAccepted:
        return await ops.test_one(mailbox_id)

    @r.post("/mailboxes/test", status_code=202, summary="Test & Enable many mailboxes")
    async def test_many(body: Selection) -> BulkResult:
        return await ops.test_many(body)

    @r.post("/mailboxes/approve", summary="Approve email of mailboxes")
    async def approve(body: Selection) -> BulkResult:
        return await ops.set_approval(body, "approved")

    @r.post("/mailboxes/reject", summary="Reject email of mailboxes")
    async def reject(body: Selection) -> BulkResult:
        return await ops.set_approval(body, "rejected")

    @r.post(
        "/mailboxes/apply-default-settings",
        status_code=202,
        summary="Apply default email settings, then Test & Enable",
    )
    async def apply_defaults(body: Selection) -> BulkResult:
        return await ops.apply_defaults(body)

    @r.post("/mailboxes/change", summary="Change multiple records: profile and delivery methods")
    async def change_many(body: ChangeManyRequest) -> BulkResult:
        return await ops.change_many(body)

    @r.post("/mailboxes/rotate-keys", summary="Re-encrypt every credential under the primary key")
    async def rotate() -> RotationReport:
        return await rotate_credentials(ops.repo, ring)

    @r.post("/jobs", status_code=202, summary="Test & Enable all mailboxes of a profile (asynchronous)")
    async def start_job(body: JobCreate) -> JobView:
        return await jobs.start_job(body.profile_id)

    @j.get("/jobs/{job_id}", summary="Progress of a job")
    async def get_job(job_id: JobId) -> JobView:
        return await jobs.get(job_id)

    @j.post("/jobs/{job_id}/cancel", summary="Cancel a job: no more tests are requested")
    async def cancel_job(job_id: JobId) -> JobView:
        return await jobs.cancel(job_id)

    return [r, j]


def register_rpc(runtime: ServiceRuntime, ops: MailboxOperations, jobs: JobRunner, ring: KeyRing) -> None:
    async def create(req: MailboxCreate) -> MailboxView:
        return await ops.create(req)

    async def create_many(req: MailboxBatchCreate) -> BulkResult:
        return await ops.create_many(req)

    async def get(req: MailboxRequest) -> MailboxView:
        return await ops.get(req.mailbox_id)

    async def list_(req: ListRequest) -> MailboxPage:
        return await ops.list(req)

    async def update(req: UpdateRequest) -> MailboxView:
        return await ops.update(req.mailbox_id, req.changes)

    async def deactivate(req: MailboxRequest) -> MailboxView:
        return await ops.deactivate(req.mailbox_id)

    async def history(req: HistoryRequest) -> TestHistory:
        return await ops.history(req)

    async def test(req: MailboxRequest) -> TestAccepted:
        return await ops.test_one(req.mailbox_id)

    async def test_many(req: Selection) -> BulkResult:
        return await ops.test_many(req)

    async def approve(req: Selection) -> BulkResult:
        return await ops.set_approval(req, "approved")

    async def reject(req: Selection) -> BulkResult:
        return await ops.set_approval(req, "rejected")

    async def apply_defaults(req: Selection) -> BulkResult:
        return await ops.apply_defaults(req)

    async def change_many(req: ChangeManyRequest) -> BulkResult:
        return await ops.change_many(req)

    async def rotate(_: RotateRequest) -> RotationReport:
        return await rotate_credentials(ops.repo, ring)

    async def job_start(req: JobCreate) -> JobView:
        return await jobs.start_job(req.profile_id)

    async def job_get(req: JobRequest) -> JobView:
        return await jobs.get(req.job_id)

    async def job_cancel(req: JobRequest) -> JobView:
        return await jobs.cancel(req.job_id)

    runtime.rpc("create", MailboxCreate, create)
    runtime.rpc("create_many", MailboxBatchCreate, create_many)
    runtime.rpc("get", MailboxRequest, get)
    runtime.rpc("list", ListRequest, list_)
    runtime.rpc("update", UpdateRequest, update)
    runtime.rpc("deactivate", MailboxRequest, deactivate)
    runtime.rpc("history", HistoryRequest, history)
    runtime.rpc("test", MailboxRequest, test)
    runtime.rpc("test_many", Selection, test_many)
    runtime.rpc("approve", Selection, approve)
    runtime.rpc("reject", Selection, reject)
    runtime.rpc("apply_defaults", Selection, apply_defaults)
    runtime.rpc("change_many", ChangeManyRequest, change_many)
    runtime.rpc("rotate_keys", RotateRequest, rotate)
    runtime.rpc("job_start", JobCreate, job_start)
    runtime.rpc("job_get", JobRequest, job_get)
    runtime.rpc("job_cancel", JobRequest, job_cancel)


__all__ = ["Identifier", "build_routers", "register_rpc"]
