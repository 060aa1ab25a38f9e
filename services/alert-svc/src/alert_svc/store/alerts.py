"""The alert document: what an alert says, whom it is for, the scopes it is found in while open,
and the AlertRaised each change of it carries (outbox).

The writes that open, count and resolve alerts are :mod:`alert_svc.store.alert_writes`; the
occurrences that count a repeat without an update of the alert :mod:`alert_svc.store.occurrences`;
the wall's reads and marks :mod:`alert_svc.store.wall`; the one-time migrations
:mod:`alert_svc.store.migrations`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, PrivateAttr

from alert_svc.domain import Draft, stable_id
from contracts.envelope import make_envelope
from contracts.events import AlertLevel, AlertRaised
from contracts.models import Direction, Owner
from contracts.subjects import alert_subject
from mailwarden_runtime.documents import Stored
from mailwarden_runtime.outbox import OutboxEntry, outbox_entry

PRODUCER = "alert-svc"
ALERTS = "alerts"
KEEP_OCCURRENCES = 20
"""The occurrence tokens an alert keeps: all a redelivered event is checked against."""


# ``open_in`` lists the scopes an open alert is found in, so one indexed ``$in`` query returns every
# open alert a status event may count on or resolve (set while open, unset when resolved):
def mailbox_scope(mailbox_id: str) -> str:
    """Every open alert about one mailbox (both recipients, every code and direction)."""
    return f"m:{mailbox_id}"


def profile_scope(profile_id: str) -> str:
    """A profile's open group, warning and majority alerts."""
    return f"p:{profile_id}"


def cause_scope(recipient: str, profile_id: str, code: str, direction: str | None) -> str:
    """One recipient's open per-mailbox alerts of one profile, code and direction (grouping)."""
    return f"c:{recipient}|{profile_id}|{code}|{direction or '-'}"


def sync_scope(mailbox_id: str) -> str:
    """A mailbox's open sync-episode alert: apart, so the status rules never count on or resolve it."""
    return f"s:{mailbox_id}"


class AlertText(BaseModel):
    """What an alert says, on the wall and in a mail."""

    level: AlertLevel
    code: str
    title: str
    message: str
    remediation: str = ""


class AlertDoc(Stored, AlertText):
    """A stored alert. While open, ``open_key`` (unique) and ``open_in`` are set; resolving unsets them."""

    open_key: str | None = None
    key: str
    recipient: Owner
    recipient_key: str
    kind: str
    mailbox_id: str | None = None
    mailbox_email: str | None = None
    profile_id: str | None = None
    direction: Direction | None = None
    affected_mailboxes: list[str] = Field(default_factory=list)
    state: Literal["open", "resolved"]
    count: int
    first_seen: datetime
    last_seen: datetime
    test_id: str | None = None
    last_test_id: str | None = None
    occurrences: list[str] = Field(default_factory=list)
    """The last occurrences counted (test ids), so a redelivered event counts once."""
    read: bool = False
    read_by: str | None = None
    """Who marked it read or unread last (``token:<sub>`` / ``jwt:<sub>``)."""
    deleted: bool = False
    deleted_by: str | None = None
    """Who deleted it from the wall."""
    open_in: list[str] | None = None
    resolved_at: datetime | None = None
    resolved_reason: str | None = None
    _stored_count: int | None = PrivateAttr(default=None)
    """``count`` as stored, when the tail's occurrences were added (:meth:`Occurrences.with_tails`)."""
    _tail: list[str] = PrivateAttr(default_factory=list)
    """The occurrences inserted since the alert was last written (their tokens, in order)."""

    @property
    def stored_count(self) -> int:
        return self.count if self._stored_count is None else self._stored_count

    @property
    def tail(self) -> list[str]:
        return list(self._tail)

    def with_tail(self, tail: list[str], counted: dict[str, object]) -> AlertDoc:
        """This alert as read with its ``tail`` (the tokens of the occurrences inserted since it was
        written) counted in: ``counted`` sets what they change (count, ``last_seen``, ...)."""
        seen = self.model_copy(update=counted)
        seen._stored_count = self.count
        seen._tail = list(tail)
        return seen


class AlertCount(Stored):
    """Only an alert's count: which generation of its occurrences is the current one."""

    count: int


UNSET_WHEN_NONE = ("open_key", "open_in", "resolved_at", "resolved_reason")
CONTENT = ("level", "kind", "code", "title", "message", "remediation")
"""What an alert says, as its draft gives it: a repeat writes it again (the text may change)."""
REPEATED = frozenset({*CONTENT, "count", "last_seen", "last_test_id", "affected_mailboxes"})
"""What counting one more occurrence sets."""


def content(draft: Draft) -> dict[str, object]:
    """What the draft says (:data:`CONTENT`), by field name."""
    return {name: getattr(draft, name) for name in CONTENT}


def open_scopes(doc: AlertDoc) -> list[str]:
    if doc.kind == "sync":
        return [sync_scope(str(doc.mailbox_id))]
    if doc.kind == "mailbox":
        cause = cause_scope(doc.recipient_key, str(doc.profile_id), doc.code, doc.direction)
        return [mailbox_scope(str(doc.mailbox_id)), cause]
    return [profile_scope(str(doc.profile_id))]


def alert_event(doc: AlertDoc, occurrence: str) -> tuple[OutboxEntry, str]:
    """The AlertRaised outbox entry for the state ``doc`` is about to have."""
    shared = {k: getattr(doc, k) for k in AlertRaised.model_fields if k in AlertDoc.model_fields}
    data = AlertRaised.model_validate(shared | {"alert_id": doc.id, "test_id": doc.last_test_id})
    event_id = uuid.UUID(stable_id("event", doc.id, occurrence))
    envelope = make_envelope(data, PRODUCER, event_id=event_id, correlation_id=doc.last_test_id)
    subject = alert_subject(doc.recipient.kind.value, doc.recipient.id, doc.level)
    return outbox_entry(envelope, subject), subject
