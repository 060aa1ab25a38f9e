"""Events of mailbox synchronization (sync-svc): email received, its feedback, and sync trouble.

Each new message in a synchronized INBOX gives one :class:`EmailReceived` on
``mailwarden.email.received.<mailbox id>`` (stream MW_EMAIL); its raw RFC 5322 bytes are in the
JetStream Object Store bucket named by :class:`RawRef`. The event id is derived from (mailbox,
UIDVALIDITY, UID) or (mailbox, UIDL) by :func:`email_event_id`, so a message is published once,
ever: JetStream drops a re-publish by its ``Nats-Msg-Id`` and the sync's stored watermark never
goes back. The consuming system answers :class:`EmailTracked` or :class:`EmailRejected`.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints

from contracts import subjects
from contracts.events import Event
from contracts.models import Frozen, Identifier, MailboxRef, TestError

EMAIL_NAMESPACE = uuid.UUID("0b6f3c52-9a0e-4d47-8f1e-6c2d7a5e3b91")
PREVIEW_MAX = 2000
HeaderText = Annotated[str, StringConstraints(max_length=2000)]
Count = Annotated[int, Field(ge=0)]
SyncProtocol = Literal["imap", "pop3"]


def email_event_id(mailbox_id: str, uidvalidity: int | None, uid: int | str) -> uuid.UUID:
    """The one id of a message in a mailbox: IMAP (UIDVALIDITY, UID), POP3 (None, UIDL)."""
    key = f"{mailbox_id}:{uidvalidity}:{uid}" if uidvalidity is not None else f"{mailbox_id}:uidl:{uid}"
    return uuid.uuid5(EMAIL_NAMESPACE, key)


class Address(Frozen):
    """One address of a header (display name decoded; address as written, lower-cased domain)."""

    name: Annotated[str, StringConstraints(max_length=300)] = ""
    address: Annotated[str, StringConstraints(max_length=320)]


class Attachment(Frozen):
    """An attachment as listed in the MIME structure; its bytes are inside the raw message."""

    name: Annotated[str, StringConstraints(max_length=300)] = ""
    content_type: Annotated[str, StringConstraints(max_length=200)]
    size: Count
    part: Annotated[str, StringConstraints(max_length=40)] = Field(
        description="MIME part number (1-based, dotted: 2.1) inside the raw message."
    )


class RawRef(Frozen):
    """Where the raw RFC 5322 bytes are: a JetStream Object Store bucket and object name."""

    bucket: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    size: Count
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class EmailReceived(Event, subject=subjects.EMAIL_RECEIVED):
    """A new message in a synchronized mailbox's INBOX (parsed only as far as this event needs)."""

    # "from" on the wire (a Python keyword, hence ``from_`` in code).
    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    mailbox: MailboxRef
    protocol: SyncProtocol
    uid: Annotated[int, Field(ge=1)] | None = Field(None, description="IMAP UID (with uidvalidity).")
    uidvalidity: Annotated[int, Field(ge=1)] | None = None
    uidl: Annotated[str, StringConstraints(max_length=70)] | None = Field(None, description="POP3 UIDL.")
    message_id: HeaderText | None = None
    in_reply_to: HeaderText | None = None
    references: list[HeaderText] = Field(default_factory=list, max_length=100)
    from_: list[Address] = Field(default_factory=list, alias="from", max_length=50)
    to: list[Address] = Field(default_factory=list, max_length=500)
    cc: list[Address] = Field(default_factory=list, max_length=500)
    reply_to: list[Address] = Field(default_factory=list, max_length=50)
    subject: HeaderText = ""
    date: datetime | None = Field(None, description="The Date header; None when absent or unparsable.")
    internal_date: datetime | None = Field(None, description="When the server received it (IMAP).")
    size: Count
    preview: Annotated[str, StringConstraints(max_length=PREVIEW_MAX)] = ""
    attachments: list[Attachment] = Field(default_factory=list, max_length=200)
    raw: RawRef | None = Field(None, description="None only when the message was over the size cap.")
    parse_error: Annotated[str, StringConstraints(max_length=500)] | None = None
    too_large: bool = False


class EmailTracked(Event, subject=subjects.EMAIL_TRACKED):
    """The consuming system took the message in (e.g. promoted it to a record)."""

    mailbox_id: Identifier
    email_id: uuid.UUID = Field(description="The id of the EmailReceived event.")
    system: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    record_ref: Annotated[str, StringConstraints(max_length=300)] = ""


class EmailRejected(Event, subject=subjects.EMAIL_REJECTED):
    """The consuming system could not take the message in (it may be moved to Undeliverable)."""

    mailbox_id: Identifier
    email_id: uuid.UUID = Field(description="The id of the EmailReceived event.")
    system: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    reason: Annotated[str, StringConstraints(max_length=1000)] = ""


class MailboxSyncFailed(Event, subject=subjects.SYNC_FAILED):
    """Synchronizing a mailbox failed (login, TLS, DNS, server). Published once per error episode
    and again only when the code changes; ``failures`` counts the attempts so far."""

    mailbox: MailboxRef
    protocol: SyncProtocol
    error: TestError
    episode_id: uuid.UUID = Field(description="Same for every event of one failure episode.")
    failures: Annotated[int, Field(ge=1)] = 1
    first_failed_at: datetime
    next_attempt_at: datetime | None = None


class MailboxSyncRecovered(Event, subject=subjects.SYNC_RECOVERED):
    """A mailbox whose sync had failed synchronized again; ends the episode."""

    mailbox: MailboxRef
    protocol: SyncProtocol
    episode_id: uuid.UUID
    failures: Annotated[int, Field(ge=1)]
    first_failed_at: datetime
    recovered_at: datetime


class MailboxSyncPaused(Event, subject=subjects.SYNC_PAUSED):
    """An operator paused (``paused``) or resumed the sync of a mailbox. While paused, the mailbox
    is not synchronized continuously, so mailbox-svc re-tests it on the org's schedule."""

    mailbox_id: Identifier
    paused: bool


class MailboxResyncRequested(Event, subject=subjects.SYNC_RESYNC_REQUESTED):
    """An operator asked to synchronize a mailbox again from a day: what arrived since then and was
    never published is published (the ledger recognises the rest)."""

    mailbox_id: Identifier
    from_date: date


__all__ = [
    "Address",
    "Attachment",
    "EmailReceived",
    "EmailRejected",
    "EmailTracked",
    "MailboxResyncRequested",
    "MailboxSyncFailed",
    "MailboxSyncPaused",
    "MailboxSyncRecovered",
    "RawRef",
    "email_event_id",
]
