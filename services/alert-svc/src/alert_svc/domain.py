"""What an alert is before it is stored: a draft, its identity, and the codes alert-svc adds.

An alert's *key* names the cause for one recipient (recipient, mailbox or profile, code,
direction): at most one alert per key is open at a time, so a cause never piles up.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

from contracts.events import AlertLevel
from contracts.models import Direction, Owner

AlertKind = Literal["mailbox", "group", "majority", "warning", "sync"]

MAILBOX_ENABLED = "mailbox_enabled"
PROFILE_MAJORITY_FAILURE = "profile_majority_failure"
SYNC_FAILED = "mailbox_sync_failed"  # one alert per sync error episode (alert_svc.sync_alerts)

_NS = uuid.UUID("6f1f2a7e-4c0b-5b7e-9a51-0a1e27c5a11e")


def stable_id(*parts: str) -> str:
    """A deterministic id, so a redelivered event rebuilds the very same alert or event id."""
    return str(uuid.uuid5(_NS, "|".join(parts)))


def recipient_key(owner: Owner) -> str:
    return f"{owner.kind.value}:{owner.id}"


@dataclass(frozen=True)
class Draft:
    """One alert for one recipient, as the rules decided it."""

    recipient: Owner
    level: AlertLevel
    kind: AlertKind
    code: str
    title: str
    message: str
    remediation: str
    profile_id: str
    mailbox_id: str | None = None
    mailbox_email: str | None = None
    direction: Direction | None = None
    affected: tuple[str, ...] = ()
    add_affected: bool = False  # True: merge into the open alert's list; False: replace it
    email_now: bool = field(default=False, compare=False)

    @property
    def about(self) -> str:
        return f"mailbox:{self.mailbox_id}" if self.mailbox_id else f"profile:{self.profile_id}"

    @property
    def key(self) -> str:
        direction = self.direction.value if self.direction else "-"
        return f"{recipient_key(self.recipient)}|{self.about}|{self.code}|{direction}"

    def alert_id(self, occurrence: str) -> str:
        return stable_id("alert", self.key, occurrence)
