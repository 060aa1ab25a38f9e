"""The alerts' writes: opened, counted, resolved, left by a recovered mailbox; each change carries
its AlertRaised (outbox).

Every write a redelivered event may repeat is conditional or keyed on the occurrence. A repeat
that changes nothing but the count is an occurrence insert (:mod:`alert_svc.store.occurrences`);
the alert's next update folds those in and then deletes them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from pymongo import ASCENDING, DESCENDING, InsertOne, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from alert_svc.domain import Draft, recipient_key
from alert_svc.store.alerts import (
    ALERTS,
    KEEP_OCCURRENCES,
    REPEATED,
    UNSET_WHEN_NONE,
    AlertDoc,
    alert_event,
    content,
    open_scopes,
)
from alert_svc.store.occurrences import OCCURRENCES, Occurrences, folded, occurrence_insert
from alert_svc.store.wall import OpenFilter
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.outbox import new_document_outbox, with_outbox


class Contention(RuntimeError):
    """An alert changed under us too often; the handler is retried."""


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


class AlertStore:
    def __init__(self, db: AsyncDatabase[Document], occurrences: Occurrences) -> None:
        self.alerts: AsyncCollection[Document] = db[ALERTS]
        self.occurrences = occurrences

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
            direction=draft.direction,
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
        (and folding in its tail: ``current`` is read with :meth:`Occurrences.with_tails`)."""
        affected = set(draft.affected)
        if draft.add_affected:
            affected |= set(current.affected_mailboxes)
        seen = current.model_copy(
            update=content(draft)
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

    async def raise_alert(self, draft: Draft, occurrence: str, test_id: str | None, at: datetime) -> str:
        """Open the draft's alert, or count one more occurrence on the open one.

        Returns "new", "repeat" or "duplicate" (this occurrence was recorded before).
        """
        for _ in range(8):
            found = await self.alerts.find_one({"open_key": draft.key}, {"outbox": 0})
            if found is None:
                try:
                    await self.alerts.insert_one(self._new_alert(draft, occurrence, test_id, at))
                except DuplicateKeyError as exc:
                    if _same_id(exc):
                        return "duplicate"
                    continue  # another writer opened it first: count on theirs
                return "new"
            [current] = await self.occurrences.with_tails([AlertDoc.model_validate(found)])
            if occurrence in current.occurrences:
                return "duplicate"
            inserted = occurrence_insert(draft, current, occurrence, test_id, at)
            if inserted is not None:
                try:
                    await self.occurrences.insert(inserted)
                except DuplicateKeyError as exc:
                    if _same_id(exc):
                        return "duplicate"
                    continue  # another writer counted this seq first: read again
                return "repeat"
            query, update = self._repeat(draft, current, occurrence, test_id, at)
            result = await self.alerts.update_one(query, update)
            if result.modified_count:
                await self.occurrences.forget_folded([folded(current)])
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
        for doc in await self.occurrences.with_tails([AlertDoc.model_validate(d) for d in found]):
            result = await self.alerts.update_one(
                {"_id": doc.id, "state": "open"}, self._resolution(doc, reason, at)
            )
            done += result.modified_count
            if result.modified_count:
                await self.occurrences.forget_folded([folded(doc)])
        return done

    async def open_alerts_in(self, scopes: Sequence[str]) -> list[AlertDoc]:
        """Every open alert in any of ``scopes``: one indexed read (``open_in`` first)."""
        query = {"open_in": {"$in": list(dict.fromkeys(scopes))}, "state": "open"}
        found = await self.alerts.find(query, {"outbox": 0}).to_list(None)
        return await self.occurrences.with_tails([AlertDoc.model_validate(d) for d in found])

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
        inserted = occurrence_insert(draft, current, occurrence, test_id, at)
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
                inserted = await self.occurrences.insert_all(
                    [p.op for p in occurrences if isinstance(p.op, InsertOne)]
                )
                applied = applied and inserted == len(occurrences)
        except BulkWriteError:
            applied = False
        if applied:
            await self.occurrences.forget_folded([p.folds for p in planned])
            return None
        return [await p.retry() for p in planned]

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


def _same_id(exc: DuplicateKeyError) -> bool:
    """The insert's own ``_id`` (made from the occurrence) is taken: this occurrence was written before."""
    return "_id" in ((exc.details or {}).get("keyValue") or {})
