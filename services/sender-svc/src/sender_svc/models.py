"""The API's own models: where a send stands, and how to look one up."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from contracts.models import Identifier
from contracts.outgoing import EmailSendFailed, EmailSendUncertain, EmailSent, IdempotencyKey
from sender_svc.documents import SendDoc, SendState


class SendLookup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mailbox_id: Identifier
    idempotency_key: IdempotencyKey


class SendStatus(BaseModel):
    """A send as stored: its state, and its outcome once there is one (the first, for a repeated key)."""

    send_id: uuid.UUID
    mailbox_id: str
    idempotency_key: str
    status: SendState
    duplicate: bool = Field(False, description="True when this key had been submitted before.")
    message_id: str
    attempts: int
    size: int
    requested_at: datetime
    requested_by: str | None = Field(None, description="Who asked for it: token:<subject> or jwt:<subject>.")
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    sent: EmailSent | None = None
    failed: EmailSendFailed | None = None
    uncertain: EmailSendUncertain | None = None

    @classmethod
    def of(cls, doc: SendDoc, duplicate: bool = False) -> SendStatus:
        ended, status, last = doc.ended(), doc.status, doc.last_error
        return cls(
            send_id=uuid.UUID(doc.id),
            mailbox_id=doc.mailbox_id,
            idempotency_key=doc.key,
            status=status,
            duplicate=duplicate,
            message_id=doc.message_id,
            attempts=doc.attempts,
            size=doc.size,
            requested_at=doc.requested_at,
            requested_by=doc.requested_by,
            next_attempt_at=doc.next_at if status == "queued" else None,
            last_error=f"{last.code}: {last.detail}" if last else None,
            sent=ended if isinstance(ended, EmailSent) else None,
            failed=ended if isinstance(ended, EmailSendFailed) else None,
            uncertain=ended if isinstance(ended, EmailSendUncertain) else None,
        )
