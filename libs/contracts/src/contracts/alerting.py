"""Changes people make to alert channels and walls (alert-svc), each published with its actor.

The envelope's ``actor`` names who did it, so the audit trail (``mailwarden audit``) lists them
like every other change. Webhook URLs are not repeated here (a URL may carry a token in its
path or query): only the host they point at.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from contracts import subjects
from contracts.events import AlertLevel, Event
from contracts.models import EmailAddress, Identifier, OwnerKind

AlertId = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class WebhookRegistered(Event, subject=subjects.WEBHOOK_REGISTERED):
    """A webhook was registered: where its alerts go (host only) and which alerts it gets."""

    webhook_id: Identifier
    host: Annotated[str, StringConstraints(min_length=1, max_length=300)] = Field(
        description="The URL's host and port; the URL itself is shown by the webhooks API only."
    )
    recipient_kind: OwnerKind | None = Field(None, description="None: every recipient's alerts.")
    recipient_id: Identifier | None = None
    levels: list[AlertLevel] = Field(default_factory=list, description="Empty: every level.")


class WebhookRemoved(Event, subject=subjects.WEBHOOK_REMOVED):
    """A webhook was removed: no more deliveries to it."""

    webhook_id: Identifier


class AlertPreferencesChanged(Event, subject=subjects.PREFERENCES_CHANGED):
    """A recipient's notification preferences were set: the levels mailed, and where."""

    recipient_kind: OwnerKind
    recipient_id: Identifier
    email_levels: list[AlertLevel]
    email: EmailAddress | None = Field(None, description="None: the owner's address from the alert.")


class AlertMarkedRead(Event, subject=subjects.WALL_READ):
    """One alert on a wall was marked read (``read``) or unread."""

    alert_id: AlertId
    recipient_kind: OwnerKind
    recipient_id: Identifier
    read: bool


class AlertsDeleted(Event, subject=subjects.WALL_DELETED):
    """Alerts left a wall: one (``alert_id``), or all of a recipient's (or of every wall, when no
    recipient is named). Written into each alert it deletes, so it is published only when some
    alert was deleted (the copies share one event id: JetStream keeps one)."""

    alert_id: AlertId | None = None
    recipient_kind: OwnerKind | None = None
    recipient_id: Identifier | None = None


__all__ = [
    "AlertMarkedRead",
    "AlertPreferencesChanged",
    "AlertsDeleted",
    "WebhookRegistered",
    "WebhookRemoved",
]
