"""The API's own models: where a send stands, and how to look one up."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.models import Identifier
from contracts.outgoing import EmailSendFailed, EmailSendUncertain, EmailSent, IdempotencyKey
from mailwarden_runtime.mongo import Document

SendState = Literal["queued", "sending", "sent", "failed", "uncertain"]


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
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    sent: EmailSent | None = None
    failed: EmailSendFailed | None = None
    uncertain: EmailSendUncertain | None = None

    @classmethod
    def of(cls, doc: Document, duplicate: bool = False) -> SendStatus:
        outcome = doc.get("outcome")
        status = doc["status"]
        last = doc.get("last_error")
        return cls(
            send_id=uuid.UUID(doc["_id"]),
            mailbox_id=doc["mailbox_id"],
            idempotency_key=doc["key"],
            status=status,
            duplicate=duplicate,
            message_id=doc["message_id"],
            attempts=doc.get("attempts", 0),
            size=doc.get("size", 0),
            requested_at=doc["requested_at"],
            next_attempt_at=doc.get("next_at") if status == "queued" else None,
            last_error=f"{last['code']}: {last['detail']}" if last else None,
            sent=EmailSent.model_validate(outcome) if outcome and status == "sent" else None,
            failed=EmailSendFailed.model_validate(outcome) if outcome and status == "failed" else None,
            uncertain=EmailSendUncertain.model_validate(outcome)
            if outcome and status == "uncertain"
            else None,
        )
