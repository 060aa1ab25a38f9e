"""Transactional outbox in the document itself: state and its events are written by one update.

A write that fails leaves no event; a write that commits always yields its events, because the
relay publishes whatever sits in ``outbox`` (with the event id as ``Nats-Msg-Id``, so a publish
repeated after a crash is dropped by JetStream) and only then removes it. Works on any
MongoDB-wire server; no transaction or replica set is needed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from contracts.envelope import Envelope
from mailwarden_runtime import metrics
from mailwarden_runtime.loop import BackgroundLoop
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.tracing import attached, carrier

log = logging.getLogger(__name__)

PENDING = "outbox_pending"
Publish = Callable[[str, str, bytes], Awaitable[object]]


def outbox_entry(envelope: Envelope[Any], subject: str | None = None) -> Document:
    entry: Document = {
        "id": str(envelope.id),
        "subject": subject or envelope.data.SUBJECT,
        "body": envelope.model_dump_json(),
    }
    trace_headers = carrier()
    if trace_headers:
        entry["trace"] = trace_headers
    return entry


def with_outbox(update: Document, entries: Iterable[Document]) -> Document:
    """Add events to an update document (``$set``/``$push`` are merged, not replaced)."""
    items = list(entries)
    if not items:
        return update
    merged = {k: dict(v) for k, v in update.items()}
    merged.setdefault("$set", {})[PENDING] = True
    merged.setdefault("$push", {})["outbox"] = {"$each": items}
    return merged


def new_document_outbox(entries: Iterable[Document]) -> Document:
    """Fields for a document inserted together with its events."""
    items = list(entries)
    return {"outbox": items, PENDING: True} if items else {"outbox": []}


class OutboxRelay:
    """Publishes pending outbox entries of some collections, oldest document first."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        collections: Iterable[str],
        publish: Publish,
        *,
        poll_interval_s: float = 1.0,
        batch: int = 200,
    ) -> None:
        self._db = db
        self._collections = list(collections)
        self._publish = publish
        self._batch = batch
        self._loop = BackgroundLoop("outbox-relay", self._pass, poll_interval_s)

    async def ensure_indexes(self) -> None:
        for name in self._collections:
            await self._db[name].create_index(PENDING, sparse=True)

    def wake(self) -> None:
        """Called after a write that added events, so they go out now rather than at the next poll."""
        self._loop.wake()

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        """Stop the loop; the caller runs a last :meth:`drain` when NATS is connected (bounded)."""
        await self._loop.stop()

    async def _pass(self) -> bool:
        return await self.drain() >= self._batch

    async def drain(self) -> int:
        """One pass over every collection; returns how many documents had events."""
        total = 0
        for name in self._collections:
            coll = self._db[name]
            docs = await coll.find({PENDING: True}, {"outbox": 1}).limit(self._batch).to_list(None)
            total += len(docs)
            if not docs:
                continue
            published: list[str] = []
            results = await asyncio.gather(
                *(self._publish_doc(doc.get("outbox") or [], published) for doc in docs),
                return_exceptions=True,
            )
            if published:
                await coll.update_many(
                    {"_id": {"$in": [d["_id"] for d in docs]}},
                    [
                        {
                            "$set": {
                                "outbox": {
                                    "$filter": {
                                        "input": "$outbox",
                                        "cond": {"$not": [{"$in": ["$$this.id", published]}]},
                                    }
                                }
                            }
                        },
                        {
                            "$set": {
                                PENDING: {"$cond": [{"$gt": [{"$size": "$outbox"}, 0]}, True, "$$REMOVE"]}
                            }
                        },
                    ],
                )
                metrics.OUTBOX_PUBLISHED.inc(len(published))
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
        metrics.OUTBOX_BACKLOG.set(total)
        return total

    async def _publish_doc(self, entries: list[Any], published: list[str]) -> None:
        for entry in entries:  # in order: events of one document must not overtake each other
            with attached(entry.get("trace")):
                await self._publish(entry["subject"], entry["id"], entry["body"].encode())
            published.append(entry["id"])
