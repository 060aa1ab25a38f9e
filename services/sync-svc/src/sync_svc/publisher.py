"""One fetched message → its raw bytes in the object store → one EmailReceived on its mailbox's subject.

The event id is :func:`contracts.email.email_event_id` of (mailbox, UIDVALIDITY, UID) or
(mailbox, UIDL), and it is the ``Nats-Msg-Id``: a replay after a crash is dropped by JetStream,
and the ledger entry returned here keeps it from being fetched again after the window.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from contracts.email import EmailReceived, SyncProtocol, email_event_id
from contracts.envelope import Envelope, make_envelope
from contracts.subjects import email_received_subject
from mailwarden_runtime.mongo import Document
from sync_svc import metrics
from sync_svc.parse import Parsed, parse_headers, parse_message
from sync_svc.rawstore import RawStore
from sync_svc.targets import SyncTarget

PublishFn = Callable[[Envelope[Any], str], Awaitable[Any]]


def fingerprint(mailbox_id: str, message_id: str | None, sent: datetime | None, size: int) -> str:
    """Recognises a message across UIDVALIDITY changes and protocols: Message-ID, Date and size."""
    key = f"{mailbox_id}\0{message_id or ''}\0{sent.isoformat() if sent else ''}\0{size}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def since_start(start: date | None) -> datetime | None:
    """The first instant published: a profile's day from midnight UTC, a mailbox's own moment as is."""
    if isinstance(start, datetime):
        return start if start.tzinfo else start.replace(tzinfo=UTC)
    return datetime(start.year, start.month, start.day, tzinfo=UTC) if start else None


@dataclass(frozen=True)
class Fetched:
    """A message as the server gave it: the whole message, or only its headers when too large."""

    size: int
    raw: bytes | None = None
    headers: bytes | None = None
    uid: int | None = None
    uidvalidity: int | None = None
    uidl: str | None = None
    internal_date: datetime | None = None


@dataclass(frozen=True)
class Prepared:
    """A message parsed and stored, its event ready to publish."""

    envelope: Envelope[EmailReceived]
    subject: str
    ledger: Document


class Publisher:
    def __init__(self, raw: RawStore, publish: PublishFn, producer: str, preview_chars: int) -> None:
        self.raw = raw
        self.publish = publish
        self.producer = producer
        self.preview_chars = preview_chars

    async def __call__(self, target: SyncTarget, msg: Fetched, protocol: SyncProtocol) -> Document:
        """Store, publish, and return the ledger entry (``_id`` = event id) to record afterwards."""
        return await self.publish_prepared(await self.prepare(target, msg, protocol))

    async def publish_prepared(self, prepared: Prepared) -> Document:
        """Publish a prepared message (in the mailbox's order: the caller awaits them in turn)."""
        await self.publish(prepared.envelope, prepared.subject)
        return prepared.ledger

    async def prepare(self, target: SyncTarget, msg: Fetched, protocol: SyncProtocol) -> Prepared:
        """Parse and store the raw bytes (these may run concurrently); the event is not sent yet."""
        mailbox_id = target.mailbox_id
        key: int | str = msg.uid if msg.uid is not None else str(msg.uidl)
        event_id = email_event_id(mailbox_id, msg.uidvalidity, key)
        too_large = msg.raw is None
        parsed: Parsed = (
            parse_message(msg.raw, self.preview_chars)
            if msg.raw is not None
            else parse_headers(msg.headers or b"")
        )
        raw_ref = await self.raw.put(mailbox_id, str(event_id), msg.raw) if msg.raw is not None else None
        event = EmailReceived(
            mailbox=target.ref,
            protocol=protocol,
            uid=msg.uid,
            uidvalidity=msg.uidvalidity,
            uidl=msg.uidl,
            message_id=parsed.message_id,
            in_reply_to=parsed.in_reply_to,
            references=parsed.references,
            from_=parsed.from_,
            to=parsed.to,
            cc=parsed.cc,
            reply_to=parsed.reply_to,
            subject=parsed.subject,
            date=parsed.date,
            internal_date=msg.internal_date,
            size=msg.size,
            preview=parsed.preview,
            attachments=parsed.attachments,
            raw=raw_ref,
            parse_error=parsed.parse_error,
            too_large=too_large,
        )
        kind = "too_large" if too_large else "parse_error" if parsed.parse_error else "ok"
        metrics.MESSAGES.labels(protocol=protocol, kind=kind).inc()
        if msg.internal_date is not None:
            metrics.LAG.observe(max(0.0, (datetime.now(UTC) - msg.internal_date).total_seconds()))
        ledger = {
            "_id": str(event_id),
            "m": mailbox_id,
            "fp": fingerprint(mailbox_id, parsed.message_id, parsed.date, msg.size),
            "uid": msg.uid,
            "uv": msg.uidvalidity,
            "uidl": msg.uidl,
        }
        envelope = make_envelope(event, self.producer, event_id=event_id)
        return Prepared(envelope, email_received_subject(mailbox_id), ledger)
