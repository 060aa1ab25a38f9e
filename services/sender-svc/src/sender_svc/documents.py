"""sender-svc's stored documents, typed: a send (the queue, its state and outcome) and its parts.

Read back from MongoDB as models (``SendDoc.model_validate``) and written as BSON by
:meth:`~mailwarden_runtime.documents.Stored.stored`; state changes stay conditional updates of
single fields (``store/sends.py``), so two senders never overwrite each other's document.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue

from contracts.models import MailboxRef
from contracts.outgoing import (
    EmailSendFailed,
    EmailSendUncertain,
    EmailSent,
    RecipientRefusal,
    SendEmailRequested,
)
from mailwarden_runtime.documents import Stored


def _utc(value: datetime) -> datetime:
    """A time read back without its zone (some MongoDB-wire servers) is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


Time = Annotated[datetime, AfterValidator(_utc)]
SendState = Literal["queued", "sending", "sent", "failed", "uncertain"]
SendOutcome = EmailSent | EmailSendFailed | EmailSendUncertain
"""The event a send ends with, by its final state (``SendDoc.ended``)."""
_OUTCOME_OF: dict[str, type[SendOutcome]] = {
    "sent": EmailSent,
    "failed": EmailSendFailed,
    "uncertain": EmailSendUncertain,
}
CopyState = Literal["pending", "saved", "failed"]


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StoredError(_Part):
    """The last transient failure of a send that waits for its retry."""

    code: str
    detail: str
    reply: str | None = None


class Partial(_Part):
    """A send that went to some recipients: those, the ones refused for good, and the ones deferred
    with 4xx (the only ones the next attempt goes to)."""

    accepted: list[str] = Field(default_factory=list)
    refused: list[RecipientRefusal] = Field(default_factory=list)
    deferred: list[RecipientRefusal] = Field(default_factory=list)
    reply: str
    size: int


class SentCopy(_Part):
    """Where the copy of a sent mail in the Sent folder stands (``sent_copy.py``)."""

    state: CopyState
    attempts: int = 0
    next_at: Time
    lease_until: Time
    token: str | None = None
    """The copier holding it (``claim_copy``)."""
    last_error: str | None = None
    at: Time | None = None


class SendDoc(Stored):
    """One send, keyed by (mailbox, idempotency key): ``_id`` is ``uuid5(mailbox, key)``."""

    mailbox_id: str
    key: str
    fingerprint: str
    """The request's content: what a reused key must match."""
    request: SendEmailRequested
    status: SendState
    attempts: int = 0
    message_id: str
    size: int = 0
    correlation_id: str | None = None
    requested_by: str | None = None
    """Who asked for it (``token:<sub>`` / ``jwt:<sub>``); its events name them as their actor."""
    requested_at: Time
    next_at: Time
    updated_at: Time
    lease_owner: str | None = None
    lease_token: str | None = None
    lease_until: Time
    data_started_at: Time | None = None
    mailbox_ref: MailboxRef | None = None
    """The mailbox as events show it, kept when DATA starts (the uncertain report after a crash)."""
    last_error: StoredError | None = None
    partial: Partial | None = None
    outcome: dict[str, JsonValue] | None = None
    """The outcome event as JSON: read it with :meth:`ended`."""
    sent_copy: SentCopy | None = None

    def ended(self) -> SendOutcome | None:
        """The event this send ended with, as its final state says (None: not ended)."""
        event = _OUTCOME_OF.get(self.status)
        return None if event is None or self.outcome is None else event.model_validate(self.outcome)
