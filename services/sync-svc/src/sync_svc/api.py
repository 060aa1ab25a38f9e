"""HTTP routes and the same operations over NATS request-reply (``mailwarden.rpc.sync-svc.<op>``)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Body, Path

from contracts.models import Identifier
from mailwarden_runtime.service import ServiceRuntime
from sync_svc.operations import MailboxRequest, Operations, ResyncRequest, SyncState

MailboxPath = Annotated[Identifier, Path()]


def build_router(ops: Operations) -> APIRouter:
    router = APIRouter(tags=["sync"])

    @router.get("/mailboxes/{mailbox_id}/sync", summary="Where the mailbox's sync stands")
    async def get_state(mailbox_id: MailboxPath) -> SyncState:
        return await ops.state(MailboxRequest(mailbox_id=mailbox_id))

    @router.post("/mailboxes/{mailbox_id}/sync/pause", summary="Stop synchronizing the mailbox")
    async def pause(mailbox_id: MailboxPath) -> SyncState:
        return await ops.pause(MailboxRequest(mailbox_id=mailbox_id))

    @router.post("/mailboxes/{mailbox_id}/sync/resume", summary="Synchronize the mailbox again")
    async def resume(mailbox_id: MailboxPath) -> SyncState:
        return await ops.resume(MailboxRequest(mailbox_id=mailbox_id))

    @router.post(
        "/mailboxes/{mailbox_id}/sync/resync",
        summary="Publish what arrived since a date and was never published",
    )
    async def resync(mailbox_id: MailboxPath, from_date: Annotated[date, Body(embed=True)]) -> SyncState:
        return await ops.resync(ResyncRequest(mailbox_id=mailbox_id, from_date=from_date))

    return router


def register_rpc(runtime: ServiceRuntime, ops: Operations) -> None:
    runtime.rpc("sync.state", MailboxRequest, ops.state)
    runtime.rpc("sync.pause", MailboxRequest, ops.pause)
    runtime.rpc("sync.resume", MailboxRequest, ops.resume)
    runtime.rpc("sync.resync", ResyncRequest, ops.resync)
