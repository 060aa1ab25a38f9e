"""mailbox-svc's operations, each declared once and served on HTTP and NATS request-reply."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter

from contracts.access import CredentialKeysRotated
from mailbox_svc.jobs import JobRunner
from mailbox_svc.models import (
    BulkResult,
    ChangeManyRequest,
    HistoryRequest,
    JobCreate,
    JobRequest,
    JobView,
    ListRequest,
    LoginRequest,
    MailboxBatchCreate,
    MailboxCreate,
    MailboxPage,
    MailboxRequest,
    MailboxView,
    RotateRequest,
    RotationReport,
    SealedLogin,
    Selection,
    TestAccepted,
    TestHistory,
    TestRequest,
    UpdateRequest,
)
from mailbox_svc.operations import MailboxOperations
from mailbox_svc.profiles import ProfileDirectory
from mailbox_svc.rotation import rotate_credentials
from mailbox_svc.testing import Rings
from mailbox_svc.use import login_for
from mailbox_svc.whoami import whoami
from mailwarden_runtime.auth.whoami import SIGNED_IN, Identity, WhoAmIRequest
from mailwarden_runtime.crypto import KeyRing
from mailwarden_runtime.operations import Bound, Operation, serve
from mailwarden_runtime.service import ServiceRuntime

NOT_FOUND = {404: "No such mailbox"}
RACE = {409: "The mailbox changed too often meanwhile; try again"}
TOO_MANY = {422: "Invalid input, or a filter matching more mailboxes than one request may touch"}
MAILBOXES = ("mailboxes",)

CREATE = Operation(
    name="create",
    method="POST",
    path="/mailboxes",
    input=MailboxCreate,
    output=MailboxView,
    permission="mailboxes:write",
    summary="Create a mailbox",
    errors={409: "A mailbox with this id exists", 422: "Invalid input or an unknown profile"},
    status_code=201,
    tags=MAILBOXES,
)
CREATE_MANY = Operation(
    name="create_many",
    method="POST",
    path="/mailboxes/batch",
    input=MailboxBatchCreate,
    output=BulkResult,
    permission="mailboxes:write",
    summary="Create many mailboxes",
    errors={409: "Some mailbox ids exist already", 422: "Invalid input, duplicate ids or an unknown profile"},
    status_code=201,
    tags=MAILBOXES,
)
LIST = Operation(
    name="list",
    method="GET",
    path="/mailboxes",
    input=ListRequest,
    output=MailboxPage,
    permission="mailboxes:read",
    summary="List mailboxes (filter, keyset pagination with `after`)",
    tags=MAILBOXES,
)
GET = Operation(
    name="get",
    method="GET",
    path="/mailboxes/{mailbox_id}",
    input=MailboxRequest,
    output=MailboxView,
    permission="mailboxes:read",
    owner_scoped=True,
    summary="Read a mailbox (passwords are never shown)",
    errors=NOT_FOUND,
    tags=MAILBOXES,
)
UPDATE = Operation(
    name="update",
    method="PATCH",
    path="/mailboxes/{mailbox_id}",
    input=UpdateRequest,
    output=MailboxView,
    permission="mailboxes:credentials",
    owner_scoped=True,
    summary="Change a mailbox; an omitted password is kept",
    errors={**NOT_FOUND, **RACE},
    tags=MAILBOXES,
    body="changes",
    docs=(
        "Setting the passwords needs `mailboxes:credentials` (a mailbox owner: on their own mailbox); "
        "every other field needs `mailboxes:write` too."
    ),
)
DEACTIVATE = Operation(
    name="deactivate",
    method="POST",
    path="/mailboxes/{mailbox_id}/deactivate",
    input=MailboxRequest,
    output=MailboxView,
    permission="mailboxes:write",
    summary="Deactivate a mailbox",
    errors={**NOT_FOUND, **RACE},
    tags=MAILBOXES,
)
HISTORY = Operation(
    name="history",
    method="GET",
    path="/mailboxes/{mailbox_id}/tests",
    input=HistoryRequest,
    output=TestHistory,
    permission="mailboxes:read",
    owner_scoped=True,
    summary="History of test runs, newest first",
    errors=NOT_FOUND,
    tags=MAILBOXES,
)
TEST = Operation(
    name="test",
    method="POST",
    path="/mailboxes/{mailbox_id}/test",
    input=TestRequest,
    output=TestAccepted,
    permission="mailboxes:test",
    owner_scoped=True,
    summary="Test & Enable one mailbox",
    errors={
        **NOT_FOUND,
        409: "The mailbox cannot be tested now (deactivated, not approved, no profile, ...)",
    },
    status_code=202,
    tags=MAILBOXES,
)
TEST_MANY = Operation(
    name="test_many",
    method="POST",
    path="/mailboxes/test",
    input=Selection,
    output=BulkResult,
    permission="mailboxes:test",
    summary="Test & Enable many mailboxes",
    errors=TOO_MANY,
    status_code=202,
    tags=MAILBOXES,
)
APPROVE = Operation(
    name="approve",
    method="POST",
    path="/mailboxes/approve",
    input=Selection,
    output=BulkResult,
    permission="mailboxes:approve",
    summary="Approve email of mailboxes",
    errors=TOO_MANY,
    tags=MAILBOXES,
)
REJECT = Operation(
    name="reject",
    method="POST",
    path="/mailboxes/reject",
    input=Selection,
    output=BulkResult,
    permission="mailboxes:approve",
    summary="Reject email of mailboxes",
    errors=TOO_MANY,
    tags=MAILBOXES,
)
APPLY_DEFAULTS = Operation(
    name="apply_defaults",
    method="POST",
    path="/mailboxes/apply-default-settings",
    input=Selection,
    output=BulkResult,
    permission="mailboxes:write",
    summary="Apply default email settings, then Test & Enable",
    errors={409: "The organisation has no default email server profile", **TOO_MANY},
    status_code=202,
    tags=MAILBOXES,
)
CHANGE_MANY = Operation(
    name="change_many",
    method="POST",
    path="/mailboxes/change",
    input=ChangeManyRequest,
    output=BulkResult,
    permission="mailboxes:write",
    summary="Change multiple records: profile and delivery methods",
    errors={422: "Invalid input, an unknown profile or a filter matching too many mailboxes"},
    tags=MAILBOXES,
)
ROTATE_KEYS = Operation(
    name="rotate_keys",
    method="POST",
    path="/mailboxes/rotate-keys",
    input=RotateRequest,
    output=RotationReport,
    permission="keys:rotate",
    summary="Re-encrypt every credential under the primary key",
    tags=MAILBOXES,
)
JOB_START = Operation(
    name="job_start",
    method="POST",
    path="/jobs",
    input=JobCreate,
    output=JobView,
    permission="jobs:run",
    summary="Test & Enable all mailboxes of a profile (asynchronous)",
    errors={422: "Invalid input or an unknown profile"},
    status_code=202,
    tags=("jobs",),
)
JOB_GET = Operation(
    name="job_get",
    method="GET",
    path="/jobs/{job_id}",
    input=JobRequest,
    output=JobView,
    permission="jobs:run",
    summary="Progress of a job",
    errors={404: "No such job"},
    tags=("jobs",),
)
JOB_CANCEL = Operation(
    name="job_cancel",
    method="POST",
    path="/jobs/{job_id}/cancel",
    input=JobRequest,
    output=JobView,
    permission="jobs:run",
    summary="Cancel a job: no more tests are requested",
    errors={404: "No such job", 409: "The job has finished already"},
    tags=("jobs",),
)

LOGIN = Operation(
    name="login",
    method="POST",
    path="/mailboxes/{mailbox_id}/login",
    input=LoginRequest,
    output=SealedLogin,
    permission="credentials:use",
    summary="A mailbox's login, sealed for sync-svc (incoming) or sender-svc (outgoing)",
    errors={
        **NOT_FOUND,
        409: "No login, unreadable, or entered for another server (credentials_redirected)",
        503: "profile-svc does not answer",
    },
    tags=MAILBOXES,
    docs="Only the service tokens of sync-svc and sender-svc hold credentials:use; no role does.",
)
WHOAMI = Operation(
    name="whoami",
    method="GET",
    path="/whoami",
    input=WhoAmIRequest,
    output=Identity,
    permission=SIGNED_IN,
    summary="Who am I: subject, roles, each permission with its scope, and the mailboxes I own",
    tags=("access",),
    docs="For screens that follow the caller's role; every operation still checks its own permission.",
)


OPERATIONS: tuple[Operation[Any, Any], ...] = (
    CREATE,
    CREATE_MANY,
    LIST,
    GET,
    UPDATE,
    DEACTIVATE,
    HISTORY,
    TEST,
    TEST_MANY,
    APPROVE,
    REJECT,
    APPLY_DEFAULTS,
    CHANGE_MANY,
    ROTATE_KEYS,
    JOB_START,
    JOB_GET,
    JOB_CANCEL,
    LOGIN,
    WHOAMI,
)


@dataclass(frozen=True)
class Logins:
    """What the login operation needs besides the mailbox operations (see mailbox_svc.use)."""

    profiles: ProfileDirectory
    rings: Rings
    ttl_s: float


def bind(ops: MailboxOperations, jobs: JobRunner, ring: KeyRing, logins: Logins) -> list[Bound[Any, Any]]:
    async def login(req: LoginRequest) -> SealedLogin:
        return await login_for(ops.mailboxes, logins.profiles, logins.rings, req, logins.ttl_s)

    async def get(req: MailboxRequest) -> MailboxView:
        return await ops.get(req.mailbox_id)

    async def update(req: UpdateRequest) -> MailboxView:
        return await ops.update(req.mailbox_id, req.changes)

    async def deactivate(req: MailboxRequest) -> MailboxView:
        return await ops.deactivate(req.mailbox_id)

    async def test(req: TestRequest) -> TestAccepted:
        return await ops.test_one(req.mailbox_id, req.smtp_mode)

    async def approve(req: Selection) -> BulkResult:
        return await ops.set_approval(req, "approved")

    async def reject(req: Selection) -> BulkResult:
        return await ops.set_approval(req, "rejected")

    async def rotate(_: RotateRequest) -> RotationReport:
        report = await rotate_credentials(ops.mailboxes, ring)
        done = CredentialKeysRotated.of("mailbox-svc", report)
        await jobs.publish(ops.envelop(done))  # the audit: who rotated, with what result
        return report

    async def job_start(req: JobCreate) -> JobView:
        return await jobs.start_job(req.profile_id)

    async def job_get(req: JobRequest) -> JobView:
        return await jobs.get(req.job_id)

    async def job_cancel(req: JobRequest) -> JobView:
        return await jobs.cancel(req.job_id)

    async def who(_: WhoAmIRequest) -> Identity:
        return await whoami(ops.mailboxes)

    return [
        CREATE.bind(ops.create),
        CREATE_MANY.bind(ops.create_many),
        LIST.bind(ops.list),
        GET.bind(get),
        UPDATE.bind(update),
        DEACTIVATE.bind(deactivate),
        HISTORY.bind(ops.history),
        TEST.bind(test),
        TEST_MANY.bind(ops.test_many),
        APPROVE.bind(approve),
        REJECT.bind(reject),
        APPLY_DEFAULTS.bind(ops.apply_defaults),
        CHANGE_MANY.bind(ops.change_many),
        ROTATE_KEYS.bind(rotate),
        JOB_START.bind(job_start),
        JOB_GET.bind(job_get),
        JOB_CANCEL.bind(job_cancel),
        LOGIN.bind(login),
        WHOAMI.bind(who),
    ]


def serve_operations(
    runtime: ServiceRuntime, ops: MailboxOperations, jobs: JobRunner, ring: KeyRing, logins: Logins
) -> APIRouter:
    """``mailwarden.rpc.mailbox-svc.<op>`` registered on ``runtime``; the HTTP routes returned."""
    return serve(runtime, bind(ops, jobs, ring, logins))
