"""The send queue: one document per send, and the copy of a sent mail in the Sent folder (a part of it).

A send is keyed by (mailbox, idempotency key) under a unique index; its state changes and outcome
events are written by one update (outbox).
States: ``queued`` (claimable when due and its lease is free; nothing was handed over yet, or
only to the recipients in ``partial.accepted`` while the ones refused with 4xx wait),
``sending`` (persisted just before DATA), then ``sent``, ``failed`` or ``uncertain``.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, ReturnDocument, UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

from contracts.envelope import Envelope
from contracts.models import MailboxRef
from contracts.outgoing import EmailSendUncertain, SendEmailRequested, send_id
from mailwarden_runtime.documents import Stored, as_stored, fields, under
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.outbox import new_document_outbox, outbox_entry, with_outbox
from sender_svc.documents import Partial, SendDoc, SendOutcome, SentCopy, StoredError

SENDS = "sends"
FREE = datetime(1970, 1, 1, tzinfo=UTC)
"""``lease_until`` of a send nobody holds (a date, so every claim condition is one range test)."""
ACTIVE = ("queued", "sending")
FINAL = ("sent", "failed", "uncertain")
DUPLICATE_KEY = 11000


class DueSend(Stored):
    """A due send as the sweep reads it (its id and mailbox only)."""

    mailbox_id: str


def now() -> datetime:
    return datetime.now(UTC)


def fingerprint(req: SendEmailRequested) -> str:
    """The content of a request (what a reused idempotency key must match)."""
    return hashlib.sha256(req.model_dump_json().encode()).hexdigest()


@dataclass(frozen=True)
class Finish:
    """A send's final state, its outcome event and ``also`` (envelopes on their own subjects)."""

    send: str
    lease_token: str
    status: str
    attempts: int
    outcome: SendOutcome
    event: Envelope[SendOutcome]
    subject: str
    also: tuple[Envelope[Any], ...] = ()
    copy: bytes | None = None
    """A sent mail to copy into the Sent folder (its bytes, handed to the copier once stored)."""

    def update(self) -> UpdateOne:
        """Conditional on the claim still being ours and the send active."""
        at = now()
        copy = None if self.copy is None else SentCopy(state="pending", next_at=at, lease_until=FREE)
        values = fields(
            SendDoc,
            status=self.status,
            attempts=self.attempts,
            outcome=self.outcome.model_dump(mode="json"),
            lease_until=FREE,
            updated_at=at,
        )
        if copy is not None:  # whole, so its times stay dates (the copier's sweep compares them)
            values["sent_copy"] = as_stored(copy, include={"state", "attempts", "next_at", "lease_until"})
        update = with_outbox(
            {"$set": values},
            [outbox_entry(self.event, self.subject), *(outbox_entry(more) for more in self.also)],
        )
        query = {"_id": self.send, "lease_token": self.lease_token, "status": {"$in": list(ACTIVE)}}
        return UpdateOne(query, update)


class SendStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.sends = db[SENDS]

    async def ensure_indexes(self) -> None:
        await self.sends.create_index([("mailbox_id", ASCENDING), ("key", ASCENDING)], unique=True)
        await self.sends.create_index([("status", ASCENDING), ("next_at", ASCENDING)])
        await self.sends.create_index([("sent_copy.state", ASCENDING), ("sent_copy.next_at", ASCENDING)])

    def new_send(
        self,
        req: SendEmailRequested,
        message_id: str,
        size: int,
        correlation_id: str | None,
        at: datetime,
        owner: str | None = None,
        hold_s: float = 0.0,
        requested_by: str | None = None,
    ) -> SendDoc:
        """A queued send as it is inserted (``at``: when it was requested, the message's Date).

        With ``owner``, the send is inserted claimed for it for ``hold_s`` (a fresh token, as
        :meth:`claim` would write): the process that queued it sends it without a claim round
        trip; if it does not get to it in time, any sender claims it as usual."""
        held = owner is not None and hold_s > 0
        return SendDoc(
            id=str(send_id(req.mailbox_id, req.idempotency_key)),
            mailbox_id=req.mailbox_id,
            key=req.idempotency_key,
            fingerprint=fingerprint(req),
            request=req,
            status="queued",
            message_id=message_id,
            size=size,
            correlation_id=correlation_id,
            requested_by=requested_by,
            requested_at=at,
            next_at=at,
            updated_at=at,
            lease_owner=owner if held else None,
            lease_token=uuid.uuid4().hex if held else None,
            lease_until=at + timedelta(seconds=hold_s) if held else FREE,
        )

    async def insert_sends(self, docs: list[SendDoc]) -> set[str]:
        """Queue sends in one round trip; returns the ids that existed already (then read :meth:`send`)."""
        if not docs:
            return set()
        try:
            await self.sends.insert_many(
                [{**d.stored(), **new_document_outbox([])} for d in docs], ordered=False
            )
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            return {docs[e["index"]].id for e in errors}
        return set()

    async def send(self, mailbox_id: str, key: str) -> SendDoc | None:
        found = await self.sends.find_one({"_id": str(send_id(mailbox_id, key))}, {"outbox": 0})
        return SendDoc.model_validate(found) if found else None

    async def due(self, limit: int) -> list[tuple[str, str]]:
        """(mailbox, send id) of queued sends that are due and free, oldest first (the sweep)."""
        at = now()
        cursor = (
            self.sends.find(
                {"status": "queued", "next_at": {"$lte": at}, "lease_until": {"$lt": at}},
                {"mailbox_id": 1},
            )
            .sort("next_at", ASCENDING)
            .limit(limit)
        )
        return [(due.mailbox_id, due.id) for due in map(DueSend.model_validate, await cursor.to_list(None))]

    async def claim(self, send: str, owner: str, lease_s: float) -> SendDoc | None:
        """Take one send by id if it is still queued, due and free (a fresh claim token each time)."""
        at = now()
        token = uuid.uuid4().hex
        doc = await self.sends.find_one_and_update(
            {"_id": send, "status": "queued", "next_at": {"$lte": at}, "lease_until": {"$lt": at}},
            {
                "$set": fields(
                    SendDoc, lease_owner=owner, lease_token=token, lease_until=at + timedelta(seconds=lease_s)
                )
            },
            projection={"outbox": 0},
            return_document=ReturnDocument.AFTER,
        )
        return SendDoc.model_validate(doc) if doc else None

    async def postpone(self, doc: SendDoc, until: datetime) -> None:
        """Give a claimed send back untried (rate limit): no attempt is counted."""
        await self.sends.update_one(
            {"_id": doc.id, "lease_token": doc.lease_token, "status": "queued"},
            {"$set": fields(SendDoc, next_at=until, lease_until=FREE, updated_at=now())},
        )

    async def mark_sending(self, doc: SendDoc, lease_s: float, ref: MailboxRef) -> bool:
        """Persist 'sending' before DATA; False when the claim was lost (then nothing is sent).

        ``ref`` (the mailbox as events show it) is kept for the uncertain report after a crash."""
        at = now()
        result = await self.sends.update_one(
            {"_id": doc.id, "lease_token": doc.lease_token, "status": "queued"},
            {
                "$set": fields(
                    SendDoc,
                    status="sending",
                    mailbox_ref=ref,
                    data_started_at=at,
                    lease_until=at + timedelta(seconds=lease_s),
                    updated_at=at,
                ),
                "$inc": {"attempts": 1},
            },
        )
        return result.modified_count == 1

    async def finish_many(self, outcomes: list[Finish]) -> int:
        """Store final outcomes, each with its events, in one bulk write; returns how many were
        stored (one is not when its send was taken from us: claim token changed, or not active)."""
        if not outcomes:
            return 0
        result = await self.sends.bulk_write([f.update() for f in outcomes], ordered=False)
        return result.modified_count

    async def retry_later(
        self, doc: SendDoc, until: datetime, error: StoredError, count: bool, partial: Partial | None = None
    ) -> bool:
        """Back to 'queued' after a transient failure. ``count``: add the attempt (a failure before
        DATA; :meth:`mark_sending` counted the others). ``partial``: the message went to some
        recipients (``accepted``, permanent ``refused``); only ``pending`` ones are tried again."""
        values = fields(
            SendDoc, status="queued", next_at=until, lease_until=FREE, last_error=error, updated_at=now()
        )
        if partial is not None:
            values |= fields(SendDoc, partial=partial)
        update: dict[str, object] = {"$set": values}
        if count:
            update["$inc"] = {"attempts": 1}
        result = await self.sends.update_one(
            {"_id": doc.id, "lease_token": doc.lease_token, "status": {"$in": list(ACTIVE)}}, update
        )
        return result.modified_count == 1

    async def stale_sending(self, limit: int = 100) -> list[SendDoc]:
        """Sends left in 'sending' past their lease: their sender died between DATA and the outcome."""
        cursor = self.sends.find({"status": "sending", "lease_until": {"$lt": now()}}, {"outbox": 0}).limit(
            limit
        )
        return [SendDoc.model_validate(d) for d in await cursor.to_list(None)]

    async def mark_uncertain(
        self, doc: SendDoc, outcome: EmailSendUncertain, event: Envelope[EmailSendUncertain], subject: str
    ) -> bool:
        update = with_outbox(
            {
                "$set": fields(
                    SendDoc, status="uncertain", outcome=outcome.model_dump(mode="json"), lease_until=FREE
                )
            },
            [outbox_entry(event, subject)],
        )
        result = await self.sends.update_one(
            {"_id": doc.id, "status": "sending", "lease_until": {"$lt": now()}}, update
        )
        return result.modified_count == 1

    # --- copies to the Sent folder ----------------------------------------------------------------
    async def copies_due(self, limit: int) -> list[str]:
        """Sends whose Sent-folder copy is pending, due and not held by a copier (the sweep)."""
        at = now()
        query = {
            "sent_copy.state": "pending",
            "sent_copy.next_at": {"$lte": at},
            "sent_copy.lease_until": {"$lt": at},
        }
        cursor = self.sends.find(query, {"_id": 1}).limit(limit)
        return [Stored.model_validate(d).id async for d in cursor]

    async def claim_copy(self, send: str, lease_s: float) -> SendDoc | None:
        """Take a pending copy for ``lease_s`` (a fresh token): one copier at a time, across replicas."""
        at = now()
        doc = await self.sends.find_one_and_update(
            {
                "_id": send,
                "status": "sent",
                "sent_copy.state": "pending",
                "sent_copy.next_at": {"$lte": at},
                "sent_copy.lease_until": {"$lt": at},
            },
            {
                "$set": under(
                    "sent_copy",
                    fields(SentCopy, lease_until=at + timedelta(seconds=lease_s), token=uuid.uuid4().hex),
                )
            },
            projection={"outbox": 0},
            return_document=ReturnDocument.AFTER,
        )
        return SendDoc.model_validate(doc) if doc else None

    async def copy_done(
        self, doc: SendDoc, state: str, attempts: int, event: Envelope[Any], subject: str
    ) -> bool:
        """The copy's end (``saved`` or ``failed``) with its event; False when the claim was lost."""
        update = with_outbox(
            {
                "$set": under(
                    "sent_copy", fields(SentCopy, state=state, attempts=attempts, lease_until=FREE, at=now())
                )
            },
            [outbox_entry(event, subject)],
        )
        result = await self.sends.update_one(self._copy_claim(doc), update)
        return result.modified_count == 1

    async def copy_later(self, doc: SendDoc, attempts: int, until: datetime, error: str) -> None:
        """Back to pending after a transient failure (``attempts`` counted), due at ``until``."""
        values = fields(SentCopy, attempts=attempts, next_at=until, lease_until=FREE, last_error=error[:300])
        await self.sends.update_one(self._copy_claim(doc), {"$set": under("sent_copy", values)})

    @staticmethod
    def _copy_claim(doc: SendDoc) -> Document:
        token = doc.sent_copy.token if doc.sent_copy is not None else None
        return {"_id": doc.id, "sent_copy.state": "pending", "sent_copy.token": token}

    async def queue_depth(self) -> int:
        return await self.sends.count_documents({"status": {"$in": list(ACTIVE)}})
