"""Outgoing email (sender-svc): a system asks a mailbox to send one mail, and learns its outcome.

A caller publishes :class:`SendEmailRequested` on ``mailwarden.send.requested`` (or calls the
``send`` operation over HTTP or NATS request-reply) with an idempotency key of its choosing: the
same (mailbox, key) sends one mail, ever. The outcome is published on
``mailwarden.send.<sent|failed|uncertain>.<mailbox id>`` (stream MW_SEND): :class:`EmailSent`,
:class:`EmailSendFailed` (classified with the error catalog) or :class:`EmailSendUncertain` (the
message may or may not have been accepted: the sender crashed after handing it over and before
storing the reply; it is never sent again on its own, the caller decides). When the server
refuses the mailbox's login, :class:`MailboxSendLoginRefused` is published once per login on
``mailwarden.send.login_refused``: mailbox-svc tests the outgoing side again, so its
policy decides (retry or disable), the Outgoing Email Status follows and alert-svc alerts. When
the profile saves sent copies, :class:`EmailSentCopy` says after ``EmailSent`` whether the copy
reached the mailbox's Sent folder (IMAP APPEND).
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints, field_validator, model_validator

from contracts import subjects
from contracts.events import Event, FieldError
from contracts.models import EmailAddress, Frozen, Identifier, MailboxRef, TestError

SEND_NAMESPACE = uuid.UUID("7c3e9a14-2b5d-4f6e-8a1c-9d0e3f2b4a67")
INLINE_ATTACHMENT_MAX = 5 * 1024 * 1024
"""Largest attachment carried inline (decoded bytes); larger ones go through the Object Store."""
MAX_RECIPIENTS = 100
"""Per field (To, Cc, Bcc)."""

EXTRA_HEADERS: frozenset[str] = frozenset(
    {
        "reply-to",
        "auto-submitted",
        "importance",
        "priority",
        "sensitivity",
        "x-priority",
        "keywords",
        "comments",
        "list-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "precedence",
    }
)
"""Extra headers a caller may set (case-insensitive), besides any ``X-`` header not ``X-Mailwarden-``.
Everything else (From, Sender, To, Bcc, Date, Message-ID, MIME structure) is the sender's."""

_X_HEADER = re.compile(r"^X-[A-Za-z0-9-]{1,70}$")
IdempotencyKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:@-]{1,128}$")]
MessageIdText = Annotated[str, StringConstraints(pattern=r"^<[^<>\s]{1,990}>$")]
ShortText = Annotated[str, StringConstraints(max_length=300)]


def send_id(mailbox_id: str, idempotency_key: str) -> uuid.UUID:
    """The one id of a (mailbox, idempotency key): the send's key, and the root of its event ids."""
    return uuid.uuid5(SEND_NAMESPACE, f"{mailbox_id}\0{idempotency_key}")


def header_allowed(name: str) -> bool:
    low = name.lower()
    if low in EXTRA_HEADERS:
        return True
    return bool(_X_HEADER.match(name)) and not low.startswith("x-mailwarden-")


class Recipient(Frozen):
    """One address; ``name`` is the display name (any Unicode, encoded per RFC 2047 on the wire)."""

    name: Annotated[str, StringConstraints(max_length=200)] = ""
    address: EmailAddress

    @field_validator("name")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if any(ch in value for ch in "\r\n\0"):
            raise ValueError("must be one line")
        return value


class ObjectRef(Frozen):
    """An object in a JetStream Object Store bucket (the sender may read only the buckets it is allowed)."""

    bucket: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    name: Annotated[str, StringConstraints(min_length=1, max_length=255)]


class OutgoingAttachment(Frozen):
    """An attachment: inline (``content_b64``, up to 5 MiB) or by Object Store reference (``object``)."""

    filename: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    content_type: Annotated[
        str,
        StringConstraints(
            pattern=r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
        ),
    ] = "application/octet-stream"
    content_b64: Annotated[str, StringConstraints(max_length=(INLINE_ATTACHMENT_MAX * 4) // 3 + 4)] | None = (
        None
    )
    object: ObjectRef | None = None
    content_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._@-]{1,200}$")] | None = Field(
        None, description="Makes it an inline part referenced from the HTML as cid:<content_id>."
    )

    @field_validator("filename")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if any(ch in value for ch in "\r\n\0/\\"):
            raise ValueError("must be a file name without path or line breaks")
        return value

    @field_validator("content_b64")
    @classmethod
    def _base64(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("must be base64") from None
        if len(raw) > INLINE_ATTACHMENT_MAX:
            raise ValueError(f"inline attachments are at most {INLINE_ATTACHMENT_MAX} bytes; use object")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> OutgoingAttachment:
        if (self.content_b64 is None) == (self.object is None):
            raise ValueError("give exactly one of content_b64 and object")
        return self

    def inline_bytes(self) -> bytes | None:
        return base64.b64decode(self.content_b64) if self.content_b64 is not None else None


class SendEmailRequested(Event, subject=subjects.SEND_REQUESTED):
    """Send one mail from a mailbox (From is the mailbox's address). Same key twice: one mail."""

    mailbox_id: Identifier
    idempotency_key: IdempotencyKey = Field(
        description="Chosen by the caller; the same (mailbox, key) sends one mail and answers its first outcome."
    )
    to: list[Recipient] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    cc: list[Recipient] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    bcc: list[Recipient] = Field(
        default_factory=list, max_length=MAX_RECIPIENTS, description="Envelope only: never in the headers."
    )
    subject: Annotated[str, StringConstraints(max_length=998)] = ""
    text: Annotated[str, StringConstraints(max_length=10_000_000)] | None = None
    html: Annotated[str, StringConstraints(max_length=10_000_000)] | None = None
    attachments: list[OutgoingAttachment] = Field(default_factory=list, max_length=50)
    in_reply_to: MessageIdText | None = None
    references: list[MessageIdText] = Field(default_factory=list, max_length=100)
    headers: dict[str, Annotated[str, StringConstraints(max_length=998)]] = Field(
        default_factory=dict,
        max_length=20,
        description="Extra headers from the allow-list (contracts.outgoing.EXTRA_HEADERS, X-*).",
    )

    @field_validator("subject")
    @classmethod
    def _subject_one_line(cls, value: str) -> str:
        if any(ch in value for ch in "\r\n\0"):
            raise ValueError("must be one line")
        return value

    @field_validator("headers")
    @classmethod
    def _allowed_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not header_allowed(name):
                raise ValueError(
                    f"header {name!r} may not be set (allowed: X-*, {', '.join(sorted(EXTRA_HEADERS))})"
                )
            if any(ch in text for ch in "\r\n\0"):
                raise ValueError(f"header {name!r} must be one line")
        return value

    @model_validator(mode="after")
    def _something_to_send(self) -> SendEmailRequested:
        if not (self.to or self.cc or self.bcc):
            raise ValueError("give at least one recipient (to, cc or bcc)")
        if self.text is None and self.html is None:
            raise ValueError("give text, html or both")
        return self

    @property
    def recipients(self) -> list[str]:
        """Every envelope recipient once, in order (To, Cc, Bcc)."""
        seen: dict[str, None] = {}
        for r in (*self.to, *self.cc, *self.bcc):
            seen.setdefault(r.address, None)
        return list(seen)


class RecipientRefusal(Frozen):
    """A recipient the server refused (RCPT TO), with its reply and RFC 3463 enhanced code."""

    address: EmailAddress
    reply_code: Annotated[int, Field(ge=200, le=599)]
    enhanced_code: Annotated[str, StringConstraints(pattern=r"^[245]\.\d{1,3}\.\d{1,3}$")] | None = None
    message: ShortText = ""
    permanent: bool


class EmailSent(Event, subject=subjects.SEND_SENT):
    """The server accepted the message for the ``accepted`` recipients (``refused`` ones did not get it)."""

    mailbox: MailboxRef
    idempotency_key: IdempotencyKey
    message_id: MessageIdText
    accepted: list[EmailAddress]
    refused: list[RecipientRefusal] = Field(default_factory=list)
    reply: ShortText = Field(
        description="The server's reply to the end of DATA, e.g. 250 2.0.0 queued as 4F2A."
    )
    size: Annotated[int, Field(ge=0)]
    attempts: Annotated[int, Field(ge=1)]
    requested_at: datetime
    sent_at: datetime


class EmailSendFailed(Event, subject=subjects.SEND_FAILED):
    """Not sent, finally: refused at submission (``errors`` name the fields), permanently refused by
    the server, or out of retries. ``error.code`` is from the catalog (``auth_failed`` means the
    mailbox's login no longer works: mailbox-svc may apply its retry-or-disable policy)."""

    mailbox_id: Identifier
    mailbox: MailboxRef | None = Field(None, description="None when the mailbox is unknown to the sender.")
    idempotency_key: IdempotencyKey
    message_id: MessageIdText | None = None
    error: TestError
    reply_code: Annotated[int, Field(ge=200, le=599)] | None = None
    enhanced_code: Annotated[str, StringConstraints(pattern=r"^[245]\.\d{1,3}\.\d{1,3}$")] | None = None
    refused: list[RecipientRefusal] = Field(default_factory=list)
    errors: list[FieldError] = Field(
        default_factory=list, description="Field-level reasons of a refused request."
    )
    attempts: Annotated[int, Field(ge=0)] = 0
    failed_at: datetime


class EmailSendUncertain(Event, subject=subjects.SEND_UNCERTAIN):
    """The message was handed over (DATA) but the reply was never stored: it may have been sent.
    Never resent automatically; send again with a new idempotency key if it must go out."""

    mailbox: MailboxRef
    idempotency_key: IdempotencyKey
    message_id: MessageIdText
    reason: ShortText
    data_started_at: datetime
    detected_at: datetime


class MailboxSendLoginRefused(Event, subject=subjects.SEND_LOGIN_REFUSED):
    """The SMTP server refused the mailbox's outgoing login while sending. Published once per login
    (``login_id``: whose login and its version, never anything secret); the same login is not tried
    again, every send meanwhile fails ``auth_failed``. mailbox-svc tests the outgoing side again."""

    mailbox: MailboxRef
    error: TestError
    login_id: Annotated[str, StringConstraints(max_length=300)]
    idempotency_key: IdempotencyKey = Field(description="The send that found out.")
    refused_at: datetime


class EmailSentCopy(Event, subject=subjects.SEND_SENT_COPY):
    """The copy of a sent mail in the mailbox's Sent folder (IMAP APPEND, when the profile's
    ``save_sent_copy`` is on): ``saved``, or why not (``error``). The mail was sent either way
    (``EmailSent`` came first): a copy that could not be saved never makes it a failed send."""

    mailbox: MailboxRef
    idempotency_key: IdempotencyKey
    message_id: MessageIdText
    folder: Annotated[str, StringConstraints(max_length=200)]
    saved: bool
    already_there: bool = Field(
        False,
        description="The folder held the message already (found by its Message-ID): not appended again.",
    )
    error: TestError | None = None
    attempts: Annotated[int, Field(ge=1)]
    copied_at: datetime


__all__ = [
    "EXTRA_HEADERS",
    "INLINE_ATTACHMENT_MAX",
    "EmailSendFailed",
    "EmailSendUncertain",
    "EmailSent",
    "EmailSentCopy",
    "MailboxSendLoginRefused",
    "ObjectRef",
    "OutgoingAttachment",
    "Recipient",
    "RecipientRefusal",
    "SendEmailRequested",
    "header_allowed",
    "send_id",
]
