"""sync-svc's operations, each declared once and served on HTTP and NATS request-reply."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from mailwarden_runtime.operations import Bound, Operation, serve
from mailwarden_runtime.service import ServiceRuntime
from sync_svc.operations import MailboxRequest, Operations, ResyncRequest, SyncState

NOT_FOUND = {404: "No such mailbox (sync-svc has not learnt it from events)"}

STATE = Operation(
    name="state",
    method="GET",
    path="/mailboxes/{mailbox_id}/sync",
    input=MailboxRequest,
    output=SyncState,
    permission="mailboxes:read",
    summary="Where the mailbox's sync stands",
    errors=NOT_FOUND,
    tags=("sync",),
    owner_scoped=True,  # a mailbox owner (or an integration granted it) reads its own mailbox's sync
    docs="Synced or not, paused, protocol, IDLE or polling, watermark, messages seen, last sync and error.",
)
PAUSE = Operation(
    name="pause",
    method="POST",
    path="/mailboxes/{mailbox_id}/sync/pause",
    input=MailboxRequest,
    output=SyncState,
    permission="mailboxes:write",
    summary="Stop synchronizing the mailbox",
    errors=NOT_FOUND,
    tags=("sync",),
    docs="The worker holding it stops within one reconcile interval; the watermark is kept.",
)
RESUME = Operation(
    name="resume",
    method="POST",
    path="/mailboxes/{mailbox_id}/sync/resume",
    input=MailboxRequest,
    output=SyncState,
    permission="mailboxes:write",
    summary="Synchronize the mailbox again",
    errors=NOT_FOUND,
    tags=("sync",),
)
RESYNC = Operation(
    name="resync",
    method="POST",
    path="/mailboxes/{mailbox_id}/sync/resync",
    input=ResyncRequest,
    output=SyncState,
    permission="mailboxes:write",
    summary="Publish what arrived since a date and was never published",
    errors=NOT_FOUND,
    tags=("sync",),
    docs="What was published before is recognised (event id, Message-ID + Date + size) and skipped.",
)
OPERATIONS: tuple[Operation[Any, Any], ...] = (STATE, PAUSE, RESUME, RESYNC)


def bind(ops: Operations) -> list[Bound[Any, Any]]:
    return [STATE.bind(ops.state), PAUSE.bind(ops.pause), RESUME.bind(ops.resume), RESYNC.bind(ops.resync)]


def serve_operations(runtime: ServiceRuntime, ops: Operations) -> APIRouter:
    """``mailwarden.rpc.sync-svc.<op>`` registered on ``runtime``; the HTTP routes returned."""
    return serve(runtime, bind(ops))
