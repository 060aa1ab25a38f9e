"""The alerts: opened, counted, resolved and deleted; each change carries its AlertRaised (outbox).

Every write a redelivered event may repeat is conditional or keyed on the occurrence.

A repeat that changes nothing but the count (the same text on an open per-mailbox alert) is an
insert, not an update: an occurrence document (``alert_occurrences``, ``_id`` from alert and
occurrence, ``seq`` unique per alert) carries its AlertRaised. The alert is folded (count,
``last_seen``, ``last_test_id``, occurrence tokens) by its next update: a changed text, the
resolution, or every FOLD_EVERY occurrences, so its unfolded tail stays short. Every reader adds
that tail (:meth:`AlertStore.with_tails`, one indexed read by the fold's generation key).

Retention: an occurrence lives until it is folded. The write that folds a tail is followed by the
deletion of that tail (:meth:`AlertStore.forget_folded`, one indexed delete per fold); what a crash
between the two leaves, and folded occurrences whose event still waited in the outbox (outbox
relay mode), are removed by :func:`alert_svc.retention` later. The alert keeps the count and the
last KEEP_OCCURRENCES tokens, which is all a redelivered event is checked against.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field, PrivateAttr
from pymongo import ASCENDING, DESCENDING, InsertOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from alert_svc.domain import Draft, recipient_key, stable_id
from alert_svc.store.wall import OpenFilter, WallFilter
from contracts.envelope import make_envelope
from contracts.events import AlertLevel, AlertRaised
from contracts.models import Owner
from contracts.subjects import alert_subject
from mailwarden_runtime.documents import Stored, fields
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.outbox import PENDING, OutboxEntry, new_document_outbox, outbox_entry, with_outbox

PRODUCER = "alert-svc"
KEEP_OCCURRENCES = 20
FOLD_EVERY = KEEP_OCCURRENCES  # occurrences inserted before the alert is updated with them
ALERTS = "alerts"
OCCURRENCES = "alert_occurrences"


class Contention(RuntimeError):
    """An alert changed under us too often; the handler is retried."""


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
    direction: str | None = None
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
    """``count`` as stored, when the tail's occurrences were added (:meth:`AlertStore.with_tails`)."""
    _tail: list[str] = PrivateAttr(default_factory=list)
    """The occurrences inserted since the alert was last written (their tokens, in order)."""

    @property
    def stored_count(self) -> int:
        return self.count if self._stored_count is None else self._stored_count

    @property
    def tail(self) -> list[str]:
        return list(self._tail)


class OccurrenceDoc(Stored):
    """One repeat of an open alert, written instead of an update of the alert (see module doc)."""

    alert_id: str
    gen: str
    """``<alert id>@<the alert's stored count>``: the tail of one fold, read by one indexed query."""
    seq: int
    """The alert's count with this occurrence: unique per alert, so two writers never share one."""
    occurrence: str
    at: datetime
    test_id: str | None = None


def generation(alert_id: str, stored_count: int) -> str:
    return f"{alert_id}@{stored_count}"


def folded(doc: AlertDoc) -> str | None:
    """The generation a write of ``doc`` (read with its tail) folds in; None: it folds nothing.

    Once that write applied, no reader asks for the generation again (the alert's count moved).
    """
    return generation(doc.id, doc.stored_count) if doc.tail else None


UNSET_WHEN_NONE = ("open_key", "open_in", "resolved_at", "resolved_reason")
CONTENT = ("level", "kind", "code", "title", "message", "remediation")
"""What an alert says, as its draft gives it: a repeat writes it again (the text may change)."""
REPEATED = frozenset({*CONTENT, "count", "last_seen", "last_test_id", "affected_mailboxes"})
"""What counting one more occurrence sets."""


def sync_scope(mailbox_id: str) -> str:
    """A mailbox's open sync-episode alert: apart, so the status rules never count on or resolve it."""
    return f"s:{mailbox_id}"


def open_scopes(doc: AlertDoc) -> list[str]:
    if doc.kind == "sync":
        return [sync_scope(str(doc.mailbox_id))]
    if doc.kind == "mailbox":
        cause = cause_scope(doc.recipient_key, str(doc.profile_id), doc.code, doc.direction)
        return [mailbox_scope(str(doc.mailbox_id)), cause]
    return [profile_scope(str(doc.profile_id))]


@dataclass(frozen=True)
class Planned:
    """One alert write of a status event, batched with the others; ``retry`` redoes it alone.

    ``upsert``: the write opens a new alert (it must insert); otherwise it must modify one document.
    """

    op: UpdateOne | InsertOne[Document]
    upsert: bool
    retry: Callable[[], Awaitable[object]]
    collection: str = ALERTS
    """``alert_occurrences`` for an occurrence insert (``upsert`` True: it must insert)."""
    folds: str | None = None
    """The generation of occurrences this write folds in (:func:`folded`): deleted once it applied."""


def alert_event(doc: AlertDoc, occurrence: str) -> tuple[OutboxEntry, str]:
    """The AlertRaised outbox entry for the state ``doc`` is about to have."""
    shared = {k: getattr(doc, k) for k in AlertRaised.model_fields if k in AlertDoc.model_fields}
    data = AlertRaised.model_validate(shared | {"alert_id": doc.id, "test_id": doc.last_test_id})
    event_id = uuid.UUID(stable_id("event", doc.id, occurrence))
    envelope = make_envelope(data, PRODUCER, event_id=event_id, correlation_id=doc.last_test_id)
    subject = alert_subject(doc.recipient.kind.value, doc.recipient.id, doc.level)
    return outbox_entry(envelope, subject), subject


class AlertStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.db = db
        self.alerts: AsyncCollection[Document] = db[ALERTS]
        self.occurrences: AsyncCollection[Document] = db[OCCURRENCES]

    async def ensure_indexes(self) -> None:
        a = self.alerts
        await a.create_index("open_key", unique=True, sparse=True)
        await a.create_index([("recipient_key", ASCENDING), ("first_seen", DESCENDING)])
        await a.create_index("mailbox_id")
        await a.create_index("profile_id")
        # Profile-level alerts (group, warning, majority) are looked up on every status event.
        # Queries name "kind" first: a planner that takes the first field's index (the embedded
        # Mongo-wire server does) then reads the few profile-level alerts, not every mailbox alert
        # of the profile (O(N) per event, O(N^2) per job).
        await a.create_index([("kind", ASCENDING), ("profile_id", ASCENDING)])
        # The scopes of open alerts (multikey, sparse): see ``open_scopes``.
        await a.create_index("open_in", sparse=True)
        await self.occurrences.create_index("gen")
        await self.occurrences.create_index([("alert_id", ASCENDING), ("seq", ASCENDING)], unique=True)
        await self._backfill_open_in()

    async def _backfill_open_in(self) -> None:
        """Open alerts stored before ``open_in`` existed get their scopes (once per database)."""
        meta = self.db["alert_svc_meta"]
        if await meta.find_one({"_id": "open_in"}):
            return
        async for doc in self.alerts.find(
            {"state": "open", "open_in": {"$exists": False}}, {"outbox": 0, "occurrences": 0}
        ):
            scopes = open_scopes(AlertDoc.model_validate(doc))
            await self.alerts.update_one({"_id": doc["_id"]}, {"$set": fields(AlertDoc, open_in=scopes)})
        await meta.update_one({"_id": "open_in"}, {"$set": {"done_at": datetime.now(UTC)}}, upsert=True)

    @staticmethod
    def _content(draft: Draft) -> dict[str, object]:
        """What the draft says (:data:`CONTENT`), by field name."""
        return {name: getattr(draft, name) for name in CONTENT}

    def _new_alert(self, draft: Draft, occurrence: str, test_id: str | None, at: datetime) -> Document:
        """The draft's alert, opened, as inserted with its AlertRaised (outbox)."""
        doc = AlertDoc(
            id=draft.alert_id(occurrence),
            level=draft.level,
            kind=draft.kind,
            code=draft.code,
            title=draft.title,
            message=draft.message,
            remediation=draft.remediation,
            open_key=draft.key,
            key=draft.key,
            recipient=draft.recipient,
            recipient_key=recipient_key(draft.recipient),
            mailbox_id=draft.mailbox_id,
            mailbox_email=draft.mailbox_email,
            profile_id=draft.profile_id,
            direction=draft.direction.value if draft.direction else None,
            affected_mailboxes=sorted(draft.affected),
            state="open",
            count=1,
            first_seen=at,
            last_seen=at,
            test_id=test_id,
            last_test_id=test_id,
            occurrences=[occurrence],
        )
        doc = doc.model_copy(update={"open_in": open_scopes(doc)})
        entry, _ = alert_event(doc, occurrence)
        # Left out while None: a resolution unsets them (``open_key`` is a sparse unique index).
        stored = {k: v for k, v in doc.stored().items() if v is not None or k not in UNSET_WHEN_NONE}
        return stored | new_document_outbox([entry])

    def _repeat(
        self, draft: Draft, current: AlertDoc, occurrence: str, test_id: str | None, at: datetime
    ) -> tuple[Document, Document]:
        """The filter and update counting one more occurrence on the open alert ``current``
        (and folding in its tail: ``current`` is read with :meth:`with_tails`)."""
        affected = set(draft.affected)
        if draft.add_affected:
            affected |= set(current.affected_mailboxes)
        seen = current.model_copy(
            update=self._content(draft)
            | {
                "count": current.count + 1,
                "last_seen": max(at, current.last_seen),
                "last_test_id": test_id,
                "affected_mailboxes": sorted(affected),
            }
        )
        entry, _ = alert_event(seen, occurrence)
        tokens = [*current.tail, occurrence]
        update = with_outbox(
            {
                "$set": seen.stored(include=REPEATED),
                "$push": {"occurrences": {"$each": tokens, "$slice": -KEEP_OCCURRENCES}},
            },
            [entry],
        )
        return {"_id": current.id, "open_key": draft.key, "count": current.stored_count}, update

    def _occurrence(
        self, draft: Draft, current: AlertDoc, occurrence: str, test_id: str | None, at: datetime
    ) -> Document | None:
        """One more occurrence as an insert, when it changes nothing but the count; else None.

        Only per-mailbox alerts (the bulk of repeats; groups, warnings and sync episodes change
        their lists or are keyed otherwise), and at most FOLD_EVERY - 1 before the alert is updated.
        """
        if current.kind != "mailbox" or len(current.tail) >= FOLD_EVERY - 1:
            return None
        same = all(getattr(current, k) == v for k, v in self._content(draft).items())
        if not same or sorted(draft.affected) != sorted(current.affected_mailboxes) or draft.add_affected:
            return None
        seen = current.model_copy(
            update={
                "count": current.count + 1,
                "last_seen": max(at, current.last_seen),
                "last_test_id": test_id,
            }
        )
        entry, _ = alert_event(seen, occurrence)
        doc = OccurrenceDoc(
            id=stable_id("occurrence", current.id, occurrence),
            alert_id=current.id,
            gen=generation(current.id, current.stored_count),
            seq=seen.count,
            occurrence=occurrence,
            at=at,
            test_id=test_id,
        )
        return doc.stored() | new_document_outbox([entry])

    async def with_tails(self, docs: list[AlertDoc]) -> list[AlertDoc]:
        """The alerts with the occurrences inserted since each was last written added in: count,
        ``last_seen``, ``last_test_id`` as they are (one read for all of them)."""
        gens = [generation(d.id, d.count) for d in docs if d.kind == "mailbox"]
        if not gens:
            return docs
        found = await self.occurrences.find({"gen": {"$in": gens}}, {"outbox": 0}).to_list(None)
        tails: dict[str, list[OccurrenceDoc]] = {}
        for occ in sorted((OccurrenceDoc.model_validate(o) for o in found), key=lambda o: o.seq):
            tails.setdefault(occ.alert_id, []).append(occ)
        out = []
        for doc in docs:
            tail = tails.get(doc.id)
            if not tail:
                out.append(doc)
                continue
            seen = doc.model_copy(
                update={
                    "count": doc.count + len(tail),
                    "last_seen": max(doc.last_seen, *(o.at for o in tail)),
                    "last_test_id": tail[-1].test_id,
                    "occurrences": [*doc.occurrences, *(o.occurrence for o in tail)][-KEEP_OCCURRENCES:],
                }
            )
            seen._stored_count = doc.count
            seen._tail = [o.occurrence for o in tail]
            out.append(seen)
        return out

    async def raise_alert(self, draft: Draft, occurrence: str, test_id: str | None, at: datetime) -> str:
        """Open the draft's alert, or count one more occurrence on the open one.

        Returns "new", "repeat" or "duplicate" (this occurrence was recorded before).
        """
        for _ in range(8):
            found = await self.alerts.find_one({"open_key": draft.key}, {"outbox": 0})
            current = None if found is None else (await self.with_tails([AlertDoc.model_validate(found)]))[0]
            if current is None:
                try:
                    await self.alerts.insert_one(self._new_alert(draft, occurrence, test_id, at))
                except DuplicateKeyError as exc:
                    if "_id" in ((exc.details or {}).get("keyValue") or {}):
                        return "duplicate"
                    continue  # another writer opened it first: count on theirs
                return "new"
            if occurrence in current.occurrences:
                return "duplicate"
            inserted = self._occurrence(draft, current, occurrence, test_id, at)
            if inserted is not None:
                try:
                    await self.occurrences.insert_one(inserted)
                except DuplicateKeyError as exc:
                    if "_id" in ((exc.details or {}).get("keyValue") or {}):
                        return "duplicate"
                    continue  # another writer counted this seq first: read again
                return "repeat"
            query, update = self._repeat(draft, current, occurrence, test_id, at)
            result = await self.alerts.update_one(query, update)
            if result.modified_count:
                await self.forget_folded([folded(current)])
                return "repeat"
        raise Contention(f"alert {draft.key} kept changing")

    def _resolution(self, doc: AlertDoc, reason: str, at: datetime, also: Collection[str] = ()) -> Document:
        """The update resolving ``doc``; ``also``: fields of ``doc`` changed before, written with it."""
        resolved = doc.model_copy(update={"state": "resolved", "resolved_at": at, "resolved_reason": reason})
        changed = {"state", "resolved_at", "resolved_reason", *also}
        update: Document = {"$unset": {"open_key": "", "open_in": ""}}
        if doc.tail:  # fold the inserted occurrences in (count, last_seen, last_test_id: read with them)
            changed |= {"count", "last_seen", "last_test_id"}
            update["$push"] = {"occurrences": {"$each": doc.tail, "$slice": -KEEP_OCCURRENCES}}
        entry, _ = alert_event(resolved, "resolved")
        return with_outbox({"$set": resolved.stored(include=changed), **update}, [entry])

    async def resolve(self, which: OpenFilter, reason: str, at: datetime) -> int:
        """Resolve every open alert ``which`` takes; each publishes its resolved state."""
        done = 0
        found = await self.alerts.find(which.query(), {"outbox": 0}).to_list(None)
        for doc in await self.with_tails([AlertDoc.model_validate(d) for d in found]):
            result = await self.alerts.update_one(
                {"_id": doc.id, "state": "open"}, self._resolution(doc, reason, at)
            )
            done += result.modified_count
            if result.modified_count:
                await self.forget_folded([folded(doc)])
        return done

    async def open_alerts_in(self, scopes: Sequence[str]) -> list[AlertDoc]:
        """Every open alert in any of ``scopes``: one indexed read (``open_in`` first)."""
        query = {"open_in": {"$in": list(dict.fromkeys(scopes))}, "state": "open"}
        found = await self.alerts.find(query, {"outbox": 0}).to_list(None)
        return await self.with_tails([AlertDoc.model_validate(d) for d in found])

    def plan_raise(
        self, draft: Draft, current: AlertDoc | None, occurrence: str, test_id: str | None, at: datetime
    ) -> Planned:
        """``raise_alert`` as one write, given the open alert of the draft's key (None: none)."""

        def retry() -> Awaitable[str]:
            return self.raise_alert(draft, occurrence, test_id, at)

        if current is None:
            doc = self._new_alert(draft, occurrence, test_id, at)
            del doc["open_key"]  # set by the upsert from the filter
            return Planned(
                UpdateOne({"open_key": draft.key}, {"$setOnInsert": doc}, upsert=True), True, retry
            )
        inserted = self._occurrence(draft, current, occurrence, test_id, at)
        if inserted is not None:
            return Planned(InsertOne(inserted), True, retry, OCCURRENCES)
        query, update = self._repeat(draft, current, occurrence, test_id, at)
        return Planned(UpdateOne(query, update), False, retry, folds=folded(current))

    def plan_resolve(self, doc: AlertDoc, reason: str, at: datetime) -> Planned:
        def retry() -> Awaitable[int]:
            return self.resolve(OpenFilter(alert_id=doc.id), reason, at)

        return Planned(
            UpdateOne({"_id": doc.id, "state": "open"}, self._resolution(doc, reason, at)),
            False,
            retry,
            folds=folded(doc),
        )

    def plan_leave_group(self, group: AlertDoc, mailbox_id: str, at: datetime) -> Planned:
        """``detach_mailbox`` for one group alert; the last mailbox leaving resolves it."""
        affected = list(group.affected_mailboxes)
        rest = [m for m in affected if m != mailbox_id]

        async def retry() -> None:
            await self.detach_mailbox(str(group.profile_id), str(group.direction), mailbox_id)
            await self.resolve(OpenFilter(alert_id=group.id, emptied=True), "recovered", at)

        query = {"_id": group.id, "state": "open", "affected_mailboxes": affected}
        if rest:
            return Planned(UpdateOne(query, {"$pull": {"affected_mailboxes": mailbox_id}}), False, retry)
        emptied = group.model_copy(update={"affected_mailboxes": []})
        update = self._resolution(emptied, "recovered", at, also=("affected_mailboxes",))
        return Planned(UpdateOne(query, update), False, retry)

    async def apply(self, planned: Sequence[Planned]) -> list[object] | None:
        """All writes in one round trip; if any did not apply as planned, redo each one alone.

        Every write is conditional or keyed on the occurrence, so redoing one that did apply
        changes nothing. Returns None, or each write's ``retry`` result after a fall-back.
        """
        if not planned:
            return None
        alerts = [p for p in planned if p.collection == ALERTS]
        occurrences = [p for p in planned if p.collection == OCCURRENCES]
        applied = True
        try:
            if alerts:
                result = await self.alerts.bulk_write([p.op for p in alerts], ordered=False)
                inserted, modified = len(result.upserted_ids or {}), result.modified_count
                applied = inserted == sum(p.upsert for p in alerts) and modified == sum(
                    not p.upsert for p in alerts
                )
            if occurrences:
                result = await self.occurrences.bulk_write([p.op for p in occurrences], ordered=False)
                applied = applied and result.inserted_count == len(occurrences)
        except BulkWriteError:
            applied = False
        if applied:
            await self.forget_folded([p.folds for p in planned])
            return None
        return [await p.retry() for p in planned]

    async def forget_folded(self, folds: Sequence[str | None]) -> int:
        """Delete the occurrences of generations folded by writes that applied (:func:`folded`).

        Those whose event still waits in the outbox (outbox relay mode) stay for the retention sweep.
        """
        gens = sorted({g for g in folds if g is not None})
        if not gens:
            return 0
        query = {"gen": {"$in": gens}, PENDING: {"$ne": True}}
        return (await self.occurrences.delete_many(query)).deleted_count

    async def sweep_unread(self, after: str | None, limit: int) -> tuple[str | None, int]:
        """One page of occurrences (by id, after ``after``): delete those no reader asks for any more.

        An occurrence is read only while its generation is its alert's current one; once folded (or
        its alert is gone) it is not, unless its event still waits in the outbox. Returns the last
        id looked at (None: the end) and how many were deleted.
        """
        query: Document = {} if after is None else {"_id": {"$gt": after}}
        page = await (
            self.occurrences.find(query, {"alert_id": 1, "gen": 1, PENDING: 1})
            .sort("_id", ASCENDING)
            .limit(limit)
        ).to_list(None)
        if not page:
            return None, 0
        ids = sorted({str(o["alert_id"]) for o in page})
        counts = {
            str(a["_id"]): int(a["count"])
            for a in await self.alerts.find({"_id": {"$in": ids}}, {"count": 1}).to_list(None)
        }
        unread = [
            o["_id"]
            for o in page
            if not o.get(PENDING)
            and (o["alert_id"] not in counts or o["gen"] != generation(o["alert_id"], counts[o["alert_id"]]))
        ]
        deleted = (
            (await self.occurrences.delete_many({"_id": {"$in": unread}})).deleted_count if unread else 0
        )
        return (str(page[-1]["_id"]) if len(page) == limit else None), deleted

    async def detach_mailbox(self, profile_id: str, direction: str, mailbox_id: str) -> None:
        """A recovered mailbox leaves the profile's group alerts (no event: the group still stands)."""
        await self.alerts.update_many(
            {
                "kind": "group",  # first: the (kind, profile_id) index
                "profile_id": profile_id,
                "direction": direction,
                "state": "open",
                "affected_mailboxes": mailbox_id,
            },
            {"$pull": {"affected_mailboxes": mailbox_id}},
        )

    async def find_alerts(self, which: WallFilter, limit: int) -> list[AlertDoc]:
        cursor = self.alerts.find(which.query(), {"outbox": 0, "occurrences": 0})
        found = (
            await cursor.sort([("first_seen", DESCENDING), ("_id", DESCENDING)]).limit(limit).to_list(None)
        )
        return await self.with_tails([AlertDoc.model_validate(d) for d in found])

    async def get_alert(self, alert_id: str) -> AlertDoc | None:
        found = await self.alerts.find_one(
            {"_id": alert_id, "deleted": False}, {"outbox": 0, "occurrences": 0}
        )
        return None if found is None else (await self.with_tails([AlertDoc.model_validate(found)]))[0]

    async def mark_read(
        self, alert_id: str, read: bool, actor: str = "", events: Sequence[OutboxEntry] = ()
    ) -> AlertDoc | None:
        """``events`` (outbox entries, e.g. AlertMarkedRead) are written by the same update."""
        update = with_outbox({"$set": fields(AlertDoc, read=read, read_by=actor)}, events)
        await self.alerts.update_one({"_id": alert_id, "deleted": False}, update)
        return await self.get_alert(alert_id)

    async def delete_alerts(
        self, which: WallFilter, actor: str = "", events: Sequence[OutboxEntry] = ()
    ) -> int:
        """Soft delete: the alert leaves the wall, and its cause may open a fresh alert.

        ``events`` (the AlertsDeleted entry) go into every alert deleted, by the same update: one
        event id, so JetStream keeps one copy; none when nothing was deleted."""
        update = with_outbox(
            {"$set": fields(AlertDoc, deleted=True, deleted_by=actor), "$unset": {"open_key": ""}}, events
        )
        result = await self.alerts.update_many(which.query(), update)
        return result.modified_count
