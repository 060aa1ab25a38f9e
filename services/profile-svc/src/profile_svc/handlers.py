"""Event handlers: profile-svc learns which mailboxes use which profile from mailbox events."""

from __future__ import annotations

from collections.abc import Sequence

from contracts.envelope import Envelope
from contracts.events import MailboxCreated, MailboxUpdated
from mailwarden_runtime.consumer import ConsumerOptions
from mailwarden_runtime.readmodels import MAILBOX_BATCH
from mailwarden_runtime.service import ServiceRuntime
from profile_svc.operations import Operations

DURABLE_CREATED = "profile-svc-mailbox-created"
DURABLE_UPDATED = "profile-svc-mailbox-updated"


def register_handlers(runtime: ServiceRuntime, ops: Operations) -> None:
    """Keep the usage read model (mailbox id → profile id), idempotent per mailbox id and version."""

    async def on_created(envelope: Envelope[MailboxCreated]) -> None:
        await ops.mailboxes_changed([envelope.data.mailbox])

    async def on_updated(envelope: Envelope[MailboxUpdated]) -> None:
        await ops.mailboxes_changed([envelope.data.mailbox])

    async def on_many(
        envelopes: Sequence[Envelope[MailboxCreated]] | Sequence[Envelope[MailboxUpdated]],
    ) -> None:
        await ops.mailboxes_changed([e.data.mailbox for e in envelopes])

    # A bulk set-up publishes thousands of these at once: each fetch is one bulk write.
    batched = ConsumerOptions(batch_size=MAILBOX_BATCH)
    runtime.consume(MailboxCreated, DURABLE_CREATED, on_created, batched, batch_handler=on_many)
    runtime.consume(MailboxUpdated, DURABLE_UPDATED, on_updated, batched, batch_handler=on_many)
