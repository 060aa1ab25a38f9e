"""The occurrences: repeats of an open alert written as inserts, folded into the alert later.

A repeat that changes nothing but the count (the same text on an open per-mailbox alert) is an
insert, not an update: an occurrence document (``alert_occurrences``, ``_id`` from alert and
occurrence, ``seq`` unique per alert) carries its AlertRaised. The alert is folded (count,
``last_seen``, ``last_test_id``, occurrence tokens) by its next update: a changed text, the
resolution, or every FOLD_EVERY occurrences, so its unfolded tail stays short. Every reader adds
that tail (:meth:`Occurrences.with_tails`, one indexed read by the fold's generation key).

Retention: an occurrence lives until it is folded. The write that folds a tail is followed by the
deletion of that tail (:meth:`Occurrences.forget_folded`, one indexed delete per fold); what a crash
between the two leaves, and folded occurrences whose event still waited in the outbox (outbox
relay mode), are removed by :class:`alert_svc.retention.OccurrenceRetention` later
(:meth:`Occurrences.sweep_unread`). The alert keeps the count and the last KEEP_OCCURRENCES tokens,
which is all a redelivered event is checked against.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import Field
from pymongo import ASCENDING, InsertOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from alert_svc.domain import Draft, stable_id
from alert_svc.store.alerts import ALERTS, KEEP_OCCURRENCES, AlertCount, AlertDoc, alert_event, content
from mailwarden_runtime.documents import Stored
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.outbox import PENDING, new_document_outbox

OCCURRENCES = "alert_occurrences"
FOLD_EVERY = KEEP_OCCURRENCES  # occurrences inserted before the alert is updated with them


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


class OccurrenceGen(Stored):
    """Only an occurrence's generation, and whether its event still waits in the outbox: what the
    retention sweep reads."""

    alert_id: str
    gen: str
    pending: bool = Field(default=False, alias=PENDING)


def generation(alert_id: str, stored_count: int) -> str:
    return f"{alert_id}@{stored_count}"


def folded(doc: AlertDoc) -> str | None:
    """The generation a write of ``doc`` (read with its tail) folds in; None: it folds nothing.

    Once that write applied, no reader asks for the generation again (the alert's count moved).
    """
    return generation(doc.id, doc.stored_count) if doc.tail else None


def occurrence_insert(
    draft: Draft, current: AlertDoc, occurrence: str, test_id: str | None, at: datetime
) -> Document | None:
    """One more occurrence of the open alert ``current`` as an insert, when it changes nothing but
    the count; else None (the alert is updated).

    Only per-mailbox alerts (the bulk of repeats; groups, warnings and sync episodes change
    their lists or are keyed otherwise), and at most FOLD_EVERY - 1 before the alert is updated.
    """
    if current.kind != "mailbox" or len(current.tail) >= FOLD_EVERY - 1:
        return None
    same = all(getattr(current, k) == v for k, v in content(draft).items())
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


class Occurrences:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.occurrences: AsyncCollection[Document] = db[OCCURRENCES]
        self._alerts: AsyncCollection[Document] = db[ALERTS]
        """Read by the sweep only: an alert's count names its current generation."""

    async def ensure_indexes(self) -> None:
        await self.occurrences.create_index("gen")
        await self.occurrences.create_index([("alert_id", ASCENDING), ("seq", ASCENDING)], unique=True)

    async def insert(self, doc: Document) -> None:
        """One :func:`occurrence_insert` (``DuplicateKeyError``: counted before, or its seq taken)."""
        await self.occurrences.insert_one(doc)

    async def insert_all(self, ops: Sequence[InsertOne[Document]]) -> int:
        """Many in one round trip (``BulkWriteError`` when any was not new): how many were inserted."""
        return (await self.occurrences.bulk_write(list(ops), ordered=False)).inserted_count

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
            tokens = [o.occurrence for o in tail]
            counted: dict[str, object] = {
                "count": doc.count + len(tail),
                "last_seen": max(doc.last_seen, *(o.at for o in tail)),
                "last_test_id": tail[-1].test_id,
                "occurrences": [*doc.occurrences, *tokens][-KEEP_OCCURRENCES:],
            }
            out.append(doc.with_tail(tokens, counted))
        return out

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
        found = await (
            self.occurrences.find(query, {"alert_id": 1, "gen": 1, PENDING: 1})
            .sort("_id", ASCENDING)
            .limit(limit)
        ).to_list(None)
        if not found:
            return None, 0
        page = [OccurrenceGen.model_validate(o) for o in found]
        ids = sorted({o.alert_id for o in page})
        alerts = await self._alerts.find({"_id": {"$in": ids}}, {"count": 1}).to_list(None)
        counts = {a.id: a.count for a in (AlertCount.model_validate(d) for d in alerts)}
        unread = [
            o.id
            for o in page
            if not o.pending
            and (o.alert_id not in counts or o.gen != generation(o.alert_id, counts[o.alert_id]))
        ]
        deleted = (
            (await self.occurrences.delete_many({"_id": {"$in": unread}})).deleted_count if unread else 0
        )
        return (page[-1].id if len(page) == limit else None), deleted
