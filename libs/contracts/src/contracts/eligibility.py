"""Which mailboxes may be enabled, synchronized or send: one rule for mailbox-svc, sync-svc and sender-svc.

Pure functions of what the events carry (a mailbox's snapshot, its enablement from its last test,
the organisation's settings), so every service decides the same way from its own read model.
"""

from __future__ import annotations

from enum import StrEnum

from contracts.events import Approval, EmailSettings, MailboxBasics
from contracts.models import DeliveryMethod, Direction, OwnerKind


def approved(approval: Approval, owner_kind: OwnerKind, settings: EmailSettings) -> bool:
    """Approved where the organisation requires approval for the owner's kind (users, queues);
    a rejected mailbox never, even where approval is not required."""
    required = settings.approved_users_only if owner_kind is OwnerKind.USER else settings.approved_queues_only
    return approval == "approved" or (not required and approval != "rejected")


class Ineligible(StrEnum):
    """Why a mailbox may not use a direction now, in the order they are checked."""

    INACTIVE = "inactive"
    NOT_SERVER_SIDE_SYNC = "not_server_side_sync"
    NOT_APPROVED = "not_approved"
    NOT_ENABLED = "not_enabled"


def ineligible(
    mailbox: MailboxBasics, direction: Direction, enabled: bool, settings: EmailSettings
) -> Ineligible | None:
    """None when ``mailbox`` may sync (incoming) or send (outgoing): active, that direction's delivery
    method server-side synchronization, approved (:func:`approved`) and ``enabled`` by its last test."""
    delivery = mailbox.incoming_delivery if direction is Direction.INCOMING else mailbox.outgoing_delivery
    if not mailbox.active:
        return Ineligible.INACTIVE
    if delivery is not DeliveryMethod.SERVER_SIDE_SYNC:
        return Ineligible.NOT_SERVER_SIDE_SYNC
    if not approved(mailbox.approval, mailbox.owner.kind, settings):
        return Ineligible.NOT_APPROVED
    if not enabled:
        return Ineligible.NOT_ENABLED
    return None
