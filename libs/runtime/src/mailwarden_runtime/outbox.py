"""Events in the document itself: state and its events are written by one update.

A write that fails leaves no event; a write that commits always yields its events. Two relays
publish them (with the event id as ``Nats-Msg-Id``, so a publish repeated after a crash is dropped
by JetStream), chosen per process by :func:`use_change_stream` (``MW_EVENT_RELAY``):

- **change stream** (a replica set, the default where there is one): the write *replaces* the
  document's ``outbox`` with its own events and :mod:`mailwarden_runtime.changes` publishes them
  from the change stream; nothing is written back, so an event costs no extra database write.
- **outbox** (any MongoDB-wire server, standalone too): the write *appends* to ``outbox`` and
  :class:`OutboxRelay` publishes whatever sits there and only then removes it (one more update).

The relay takes the documents whose events wait longest first (``outbox_since``, indexed). An
entry that the server keeps refusing (no stream for its subject, too large, ...) is moved to the
dead-letter stream after ``max_attempts`` tries, so it does not hold back the rest; while NATS
itself is unreachable nothing counts as an attempt, and nothing is ever dropped.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, NotRequired, TypedDict

import nats.errors
import nats.js.errors
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from contracts.envelope import Envelope, make_envelope
from contracts.subjects import dead_letter_subject
from mailwarden_runtime import metrics
from mailwarden_runtime.consumer import dead_letter_record
from mailwarden_runtime.loop import BackgroundLoop
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.tracing import attached, carrier

log = logging.getLogger(__name__)

PENDING = "outbox_pending"
WRITTEN_AT = "outbox_at"  # change-stream mode: when the document's current events were written
SINCE = "outbox_since"  # when the oldest event still in the document's outbox was written
Publish = Callable[[str, str, bytes], Awaitable[object]]

# Failures that say nothing about the entry (NATS away or slow): retried for ever, never counted.
TRANSIENT = (
    TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.NoRespondersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.js.errors.NoStreamResponseError,  # JetStream not answering (e.g. a server restarting)
    nats.js.errors.ServiceUnavailableError,
    RuntimeError,  # not connected yet
)


class OutboxEntry(TypedDict):
    """One event as a document's outbox keeps it until a relay publishes it."""

    id: str
    """The event id, published as ``Nats-Msg-Id``."""
    subject: str
    body: str
    """The envelope as JSON."""
    trace: NotRequired[dict[str, str]]
    """The trace context of the write, continued by the publish."""


def outbox_entry(envelope: Envelope[Any], subject: str | None = None) -> OutboxEntry:
    entry = OutboxEntry(
        id=str(envelope.id), subject=subject or envelope.data.SUBJECT, body=envelope.model_dump_json()
    )
    trace_headers = carrier()
    if trace_headers:
        entry["trace"] = trace_headers
    return entry


class _Mode:
    change_stream = False


_MODE = _Mode()


def use_change_stream(on: bool) -> None:
    """Set how this process writes events (once, by ``ServiceRuntime.start`` from ``MW_EVENT_RELAY``)."""
    _MODE.change_stream = on


def change_stream_in_use() -> bool:
    return _MODE.change_stream


def with_outbox(update: Document, entries: Iterable[OutboxEntry]) -> Document:
    """Add events to an update document (``$set``/``$push``/``$min`` are merged, not replaced)."""
    items = list(entries)
    if not items:
        return update
    merged = {k: dict(v) for k, v in update.items()}
    if _MODE.change_stream:
        # Replaced by every write, read from the change: the whole field, never a path inside it.
        merged.setdefault("$set", {}).update({"outbox": items, WRITTEN_AT: datetime.now(UTC)})
        return merged
    merged.setdefault("$set", {})[PENDING] = True
    merged.setdefault("$min", {})[SINCE] = datetime.now(UTC)  # kept when older events still wait
    merged.setdefault("$push", {})["outbox"] = {"$each": items}
    return merged


def new_document_outbox(entries: Iterable[OutboxEntry]) -> Document:
    """Fields for a document inserted together with its events."""
    items = list(entries)
    if _MODE.change_stream:
        return {"outbox": items, WRITTEN_AT: datetime.now(UTC)} if items else {"outbox": []}
    return {"outbox": items, PENDING: True, SINCE: datetime.now(UTC)} if items else {"outbox": []}


class OutboxRelay:
    """Publishes pending outbox entries of some collections, the longest-waiting document first."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        collections: Iterable[str],
        publish: Publish,
        *,
        name: str = "outbox",
        poll_interval_s: float = 1.0,
        batch: int = 200,
        max_attempts: int = 5,
    ) -> None:
        self._db = db
        self._collections = list(collections)
        self.batch = batch
        self.name = name  # dead letters go to mailwarden.dlq.<name>
        self.entries = EntryPublisher(publish, name, max_attempts)
        self._loop = BackgroundLoop("outbox-relay", self._pass, poll_interval_s)

    async def ensure_indexes(self) -> None:
        for name in self._collections:
            await self._db[name].create_index(PENDING, sparse=True)
            await self._db[name].create_index([(PENDING, 1), (SINCE, 1)], sparse=True)

    def wake(self) -> None:
        """Called after a write that added events, so they go out now rather than at the next poll."""
        self._loop.wake()

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        """Stop the loop; the caller runs a last :meth:`drain` when NATS is connected (bounded)."""
        await self._loop.stop()

    async def _pass(self) -> bool:
        return await self.drain() >= self.batch

    async def drain(self) -> int:
        """One pass over every collection; returns how many documents had events.

        Raises the first transient failure after the pass, so the loop backs off while NATS is away.
        """
        total = backlog = 0
        failure: BaseException | None = None
        for name in self._collections:
            coll = self._db[name]
            docs = (
                await coll.find({PENDING: True}, {"outbox": 1})
                .sort([(PENDING, 1), (SINCE, 1)])
                .limit(self.batch)
                .to_list(None)
            )
            total += len(docs)
            if not docs:
                continue
            done: list[str] = []  # published or dead-lettered: removed from the outbox
            results = await asyncio.gather(
                *(self.entries.publish_all(name, doc.get("outbox") or [], done) for doc in docs),
                return_exceptions=True,
            )
            if done:
                await _remove_entries(coll, [d["_id"] for d in docs], done)
            cleared = sum(r is True for r in results)
            if len(docs) < self.batch:
                backlog += len(docs) - cleared  # every pending document was in this pass
            else:
                backlog += await coll.count_documents({PENDING: True})
            failure = failure or next((r for r in results if isinstance(r, BaseException)), None)
        metrics.OUTBOX_BACKLOG.set(backlog)
        if failure is not None:
            raise failure
        return total


class EntryPublisher:
    """Publishes stored entries in order; dead-letters one the server refused ``max_attempts`` times."""

    def __init__(self, publish: Publish, name: str, max_attempts: int) -> None:
        self._publish = publish
        self.name = name
        self.max_attempts = max_attempts
        self._failures: dict[str, int] = {}  # entry id -> refusals counted in this process

    async def publish_all(self, collection: str, entries: list[Any], done: list[str]) -> bool:
        """Publish a document's entries in order (they must not overtake each other); True when all went."""
        for entry in entries:
            entry_id = str(entry.get("id", ""))
            try:
                with attached(entry.get("trace")):
                    await self._publish(entry["subject"], entry_id, entry["body"].encode())
            except TRANSIENT:
                raise
            except Exception as exc:
                if not await self.refused(collection, entry, exc):
                    raise
            else:
                metrics.OUTBOX_PUBLISHED.inc()
            self._failures.pop(entry_id, None)
            done.append(entry_id)
        return True

    async def refused(self, collection: str, entry: Any, exc: Exception) -> bool:
        """Count a refusal of ``entry``; at ``max_attempts`` dead-letter it. True when it was."""
        entry_id = str(entry.get("id", "") if isinstance(entry, dict) else "")
        attempts = self._failures.get(entry_id, 0) + 1
        self._failures[entry_id] = attempts
        log.warning(
            "outbox entry refused",
            extra={"collection": collection, "event_id": entry_id, "attempt": attempts, "error": repr(exc)},
        )
        if attempts < self.max_attempts:
            return False
        body = entry.get("body", "") if isinstance(entry, dict) else ""
        subject = entry.get("subject", "") if isinstance(entry, dict) else ""
        record = dead_letter_record(
            self.name,
            str(subject),
            str(body).encode(),
            f"outbox entry of {collection} refused {attempts} times: {exc!r}",
            attempts,
        )
        # A fixed id per entry: dead-lettered again after a crash, the server drops the copy.
        envelope = make_envelope(
            record, self.name, event_id=uuid.uuid5(uuid.NAMESPACE_URL, f"dlq:{entry_id}")
        )
        await self._publish(dead_letter_subject(self.name), str(envelope.id), envelope.to_bytes())
        metrics.DEAD_LETTERS.labels(consumer=self.name).inc()
        log.error("outbox entry dead-lettered", extra={"collection": collection, "event_id": entry_id})
        return True


async def _remove_entries(coll: AsyncCollection[Document], ids: list[Any], done: list[str]) -> None:
    await coll.update_many(
        {"_id": {"$in": ids}},
        [
            {
                "$set": {
                    "outbox": {
                        "$filter": {"input": "$outbox", "cond": {"$not": [{"$in": ["$$this.id", done]}]}}
                    }
                }
            },
            {
                "$set": {
                    PENDING: {"$cond": [{"$gt": [{"$size": "$outbox"}, 0]}, True, "$$REMOVE"]},
                    SINCE: {"$cond": [{"$gt": [{"$size": "$outbox"}, 0]}, f"${SINCE}", "$$REMOVE"]},
                }
            },
        ],
    )
