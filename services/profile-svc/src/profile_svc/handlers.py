"""Event handlers: profile-svc learns which mailboxes use which profile from mailbox events."""

from __future__ import annotations

from contracts.envelope import Envelope
from contracts.events import MailboxCreated, MailboxUpdated
from mailwarden_runtime.service import ServiceRuntime
from profile_svc.operations import Operations

DURABLE_CREATED = "profile-svc-mailbox-created"
DURABLE_UPDATED = "profile-svc-mailbox-updated"


def register_handlers(runtime: ServiceRuntime, ops: Operations) -> None:
    """Keep the usage read model (mailbox id → profile id), idempotent per mailbox id and version."""

    async def on_created(envelope: Envelope[MailboxCreated]) -> None:
        await ops.mailbox_changed(envelope.data.mailbox)

    async def on_updated(envelope: Envelope[MailboxUpdated]) -> None:
        await ops.mailbox_changed(envelope.data.mailbox)

    runtime.consume(MailboxCreated, DURABLE_CREATED, on_created)
    runtime.consume(MailboxUpdated, DURABLE_UPDATED, on_updated)
