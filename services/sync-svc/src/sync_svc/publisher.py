"""One fetched message → its raw bytes in the object store → one EmailReceived on its mailbox's subject.

The event id is :func:`contracts.email.email_event_id` of (mailbox, UIDVALIDITY, UID) or
(mailbox, UIDL), and it is the ``Nats-Msg-Id``: a replay after a crash is dropped by JetStream,
and the ledger entry returned here keeps it from being fetched again after the window.

Messages go out in batches without a round trip each: :meth:`Publisher.stage` parses a message
and builds its event; :meth:`Publisher.release` sends a batch's raw objects, awaits their acks,
then sends its events in order; :meth:`Publisher.confirm` awaits their acks together. An event is
thus only published once the object it points at is stored, and a batch is stored in JetStream
when confirm returns (:meth:`Publisher.flush` does both, for one message at a time).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from nats.js.api import PubAck

from contracts.email import EmailReceived, SyncProtocol, email_event_id
from contracts.envelope import Envelope, envelope_model
from contracts.subjects import email_received_subject
from sync_svc import metrics
from sync_svc.documents import LedgerEntry
from sync_svc.parse import Parsed, parse_headers, parse_message
from sync_svc.rawstore import RawStore
from sync_svc.targets import SyncTarget

PublishFn = Callable[[Envelope[Any], str], Awaitable[Any]]
SendFn = Callable[[list[Envelope[Any]], str], Awaitable[list["asyncio.Future[PubAck]"]]]
"""Sends events of one subject in order without waiting (one span for them); their acks."""
ACK_TIMEOUT_S = 30.0


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
class Staged:
    """A message parsed, its event built; :meth:`Publisher.release` stores ``raw`` and sends the event."""

    envelope: Envelope[EmailReceived]
    subject: str
    ledger: LedgerEntry
    raw: bytes | None
    kind: str  # ok, too_large or parse_error (the metric's label)

    @property
    def raw_bytes(self) -> int:
        return len(self.raw) if self.raw is not None else 0


class Publisher:
    def __init__(
        self,
        raw: RawStore,
        send: SendFn,
        producer: str,
        preview_chars: int,
        ack_timeout_s: float = ACK_TIMEOUT_S,
    ) -> None:
        self.raw = raw
        self.send = send
        self.producer = producer
        self.preview_chars = preview_chars
        self.ack_timeout_s = ack_timeout_s

    async def __call__(self, target: SyncTarget, msg: Fetched, protocol: SyncProtocol) -> LedgerEntry:
        """Store, publish, and return the ledger entry (``_id`` = event id) to record afterwards."""
        return (await self.flush([self.stage(target, msg, protocol)]))[0]

    async def flush(self, batch: list[Staged]) -> list[LedgerEntry]:
        """Await the batch's raw objects, publish its events in order, await their acks; the ledger
        entries to record. Raises (nothing recorded) when any of it is not stored in time."""
        return await self.confirm(batch, await self.release(batch))

    async def release(self, batch: list[Staged]) -> list[asyncio.Future[PubAck]]:
        """Store the batch's raw objects (sent together: few large socket writes), then send its
        events in order; their acks."""
        raw_acks: list[asyncio.Future[PubAck]] = []
        try:
            for staged in batch:
                ref = staged.envelope.data.raw
                if staged.raw is not None and ref is not None:
                    raw_acks += await self.raw.send(ref, staged.raw)
            async with asyncio.timeout(self.ack_timeout_s):
                await _all(raw_acks)
        finally:
            for ack in raw_acks:
                ack.cancel()  # no-op once done; frees nats-py's slot of one that never came
        acks: list[asyncio.Future[PubAck]] = []
        for subject, group in itertools.groupby(batch, key=lambda staged: staged.subject):
            acks += await self.send([staged.envelope for staged in group], subject)  # one mailbox: one group
        return acks

    async def confirm(self, batch: list[Staged], acks: list[asyncio.Future[PubAck]]) -> list[LedgerEntry]:
        """Await the events' acks: the ledger entries of a batch now stored in JetStream."""
        try:
            async with asyncio.timeout(self.ack_timeout_s):
                await _all(acks)
        finally:
            for ack in acks:
                ack.cancel()  # no-op once done; frees nats-py's slot of one that never came
        now = datetime.now(UTC)
        for staged in batch:
            event = staged.envelope.data
            metrics.messages(event.protocol, staged.kind).inc()
            if event.internal_date is not None:
                metrics.LAG.observe(max(0.0, (now - event.internal_date).total_seconds()))
        return [staged.ledger for staged in batch]

    def stage(self, target: SyncTarget, msg: Fetched, protocol: SyncProtocol) -> Staged:
        """Parse the message and build its event (CPU only: nothing is sent yet)."""
        mailbox_id = target.mailbox_id
        key: int | str = msg.uid if msg.uid is not None else str(msg.uidl)
        event_id = email_event_id(mailbox_id, msg.uidvalidity, key)
        eid = str(event_id)
        too_large = msg.raw is None
        parsed: Parsed = (
            parse_message(msg.raw, self.preview_chars)
            if msg.raw is not None
            else parse_headers(msg.headers or b"")
        )
        raw_ref = self.raw.reference(mailbox_id, eid, msg.raw) if msg.raw is not None else None
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
        ledger = LedgerEntry(
            id=eid,
            m=mailbox_id,
            fp=fingerprint(mailbox_id, parsed.message_id, parsed.date, msg.size),
            uid=msg.uid,
            uv=msg.uidvalidity,
            uidl=msg.uidl,
        )
        envelope = _ENVELOPE.model_construct(
            id=event_id,
            type=event.TYPE,
            schema_version=event.VERSION,
            occurred_at=datetime.now(UTC),
            correlation_id=eid,
            producer=self.producer,
            actor=None,
            data=event,
        )
        return Staged(envelope, email_received_subject(mailbox_id), ledger, msg.raw, kind)


_ENVELOPE = envelope_model(EmailReceived)
"""Built with ``model_construct``: every field is ours and ``data`` was validated when it was built
(what :func:`make_envelope` would check again costs ~5 % of a message's CPU on a big first sync;
``tests/sync_svc/test_units.py`` compares the two)."""


async def _all(acks: list[asyncio.Future[PubAck]]) -> None:
    """Await acks in turn: those already there cost nothing (``gather`` wraps and calls back each)."""
    for ack in acks:
        await ack
