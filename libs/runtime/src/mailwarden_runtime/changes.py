"""Events published from the database's change stream: the state write is the only write.

Each write that has events replaces its document's ``outbox`` field with them
(:func:`mailwarden_runtime.outbox.with_outbox` in change-stream mode). This relay follows the
service database's change stream, filtered to those writes, publishes each change's events in
commit order (a document's events never overtake each other) with the event id as
``Nats-Msg-Id``, and then remembers how far it got: the stream's resume token, stored in
``event_relay`` at most every ``checkpoint_s`` while it publishes and once it is idle (one small
document per interval, not per event; a position that only moved past other writes every
``quiet_checkpoint_s``).

Each stored position is a new document (``_id`` ``<relay>/<seq>.<process>``, ``seq`` the time in
ns, never less than the newest stored one + 1), never an update of an existing one (issue #16: a
test updates one document, its mailbox's status). The relay resumes from the newest (one read of
the ``_id`` index, sorted); every ``keep_positions`` inserts one ``delete_many`` removes the older
ones, so a relay keeps at most ``keep_positions`` + 1 of them (per process running it). Each is a position before which
everything was published, so resuming from any of them (a replica's, an older one) is safe: it
only publishes more again. The single document ``{_id: <relay>, token, at}`` that earlier versions
updated in place is read when no new one exists (the first start after an upgrade) and removed
with the first prune, right after the first new position is stored.

The relay reads the stream when its own process wrote events (:class:`OwnWrites` sees the
service's write commands succeed and calls :meth:`ChangeStreamRelay.wake`) and otherwise every
``poll_s``, like the outbox relay. It does not keep a getMore waiting on the server: the embedded
server wakes every waiting change stream on every write to any database, so one watcher per service
cost a getMore (and a scan) per write on the server for each of them. The poll publishes writes
made by others (another replica, a process that crashed before its relay published) within
``poll_s``.

Nothing is lost: the token is stored only after everything before it was published, and a
restart resumes after the newest stored token, so at worst the events of the last interval are
published again, which JetStream drops inside its duplicate window (``dedupe_window_s``, 600 s);
past it (a position older than that, e.g. a relay that failed to store for minutes) they reach
the consumers again, which are idempotent (conditional updates keyed on event or test ids). The first start stores the stream's position before the service writes
anything. Replicas of a service each follow the whole stream (every event published once per
replica, the copies dropped by JetStream). If the stored position has left the oplog (the relay
was down longer than the oplog window), the latest events of every document written since the
stored time are published again and the loss of anything older is logged as an error.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import DESCENDING, monitoring
from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import OperationFailure

from mailwarden_runtime import metrics
from mailwarden_runtime.bounded import cancel_and_wait, first_failure, honour_cancellation
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.outbox import PENDING, TRANSIENT, WRITTEN_AT, EntryPublisher, Publish

log = logging.getLogger(__name__)

POSITIONS = "event_relay"
KEEP_POSITIONS = 100  # a relay's positions are pruned once this many were stored since the last prune
# The stream cannot resume from the stored token: it left the oplog (286, 280, 136), or the
# server cannot read it (260 InvalidResumeToken; 9 FailedToParse on the embedded server).
HISTORY_LOST = {9, 136, 260, 280, 286}
# A write's events are stamped before it commits: the recovery reads back this much further.
WRITE_MARGIN = timedelta(seconds=60)


class ChangeStreamRelay:
    """Publishes the events of ``collections`` as their writes appear in the change stream."""

    def __init__(
        self,
        db: AsyncDatabase[Document],
        collections: Iterable[str],
        publish: Publish,
        *,
        name: str = "outbox",
        batch: int = 500,
        max_await_ms: int = 100,
        poll_s: float = 1.0,
        checkpoint_s: float = 5.0,
        settle_s: float = 1.0,
        quiet_checkpoint_s: float = 10.0,
        max_attempts: int = 5,
        retry_pause_s: float = 0.2,
        keep_positions: int = KEEP_POSITIONS,
    ) -> None:
        self._db = db
        self._collections = list(collections)
        self.name = name  # dead letters go to mailwarden.dlq.<name>; the position is stored under it
        self.entries = EntryPublisher(publish, name, max_attempts)
        self._batch = batch
        self._max_await_ms = max_await_ms  # a getMore's wait: catches a write committing meanwhile
        self._poll_s = poll_s
        self._checkpoint_s = checkpoint_s
        self._settle_s = settle_s
        self._quiet_checkpoint_s = quiet_checkpoint_s
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events_unsaved = False  # published events whose position is not stored yet
        self._retry_pause_s = retry_pause_s
        self._published: Mapping[str, Any] | None = None  # token after the last published change
        self._published_upto = datetime.now(UTC)  # every write stamped before this is published
        self._saved: Mapping[str, Any] | None = None
        self._saved_at = 0.0
        self._keep_positions = keep_positions
        self._seq = 0  # the last position's sequence (ns): a new one sorts after every stored one
        self._process = uuid.uuid4().hex[:8]  # two replicas never store the same _id
        self._since_prune = 0  # positions stored since the last prune
        self._legacy = False  # an old-shape position (one updated document) may still be stored
        self._task: asyncio.Task[None] | None = None

    @property
    def pipeline(self) -> list[Document]:
        return events_pipeline(self._collections)

    async def ensure_indexes(self) -> None:
        """None: every index costs each write its bookkeeping, and only the rare recovery after a
        lost history reads ``outbox_at`` (a collection scan then)."""

    async def prepare(self) -> None:
        """Store where the stream is now if nothing is stored: called before the service writes."""
        if await self._stored() is not None:
            return
        self._published_upto = datetime.now(UTC) - WRITE_MARGIN
        async with await self._db.watch(self.pipeline) as stream:
            await self._save(stream.resume_token, force=True)

    def start(self) -> None:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.create_task(self._run(), name=f"{self.name}-changes")

    def wake(self) -> None:
        """Read the stream now: this process wrote events (callable from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wakeup.set()
        else:
            loop.call_soon_threadsafe(self._wakeup.set)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task, 5.0)

    async def drain(self) -> int:
        """The stop's last step: store how far the relay published (what is left comes next start)."""
        await self._save(self._published, force=True)
        return 0

    async def _run(self) -> None:
        pause = self._retry_pause_s
        while True:
            honour_cancellation()  # a driver that swallowed our cancellation must not keep us looping
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning(
                    "%s: change stream relay failed; resuming from the stored position",
                    self.name,
                    exc_info=True,
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
            else:
                pause = self._retry_pause_s

    async def _follow(self) -> None:
        stored = await self._stored()
        token = stored["token"] if stored else None
        try:
            stream = await self._db.watch(
                self.pipeline, resume_after=token, max_await_time_ms=self._max_await_ms
            )
        except OperationFailure as exc:
            if exc.code not in HISTORY_LOST or stored is None:
                raise
            await self._recover(stored, exc)
            return
        async with stream:
            self._published = token
            # The stream is read by its own task, so what has arrived is published at once:
            # a getMore waits for more (up to max_await) and must not hold back what is here.
            queue: asyncio.Queue[Document] = asyncio.Queue(maxsize=2 * self._batch)
            progress = _Progress()
            await first_failure(self._read(stream, queue, progress), self._publish_from(queue, progress))

    async def _read(
        self, stream: AsyncChangeStream[Document], queue: asyncio.Queue[Document], progress: _Progress
    ) -> None:
        while stream.alive:
            change = await stream.try_next()
            if change is None:
                # An empty batch: the server has looked past everything before this token, and
                # every change before it is already queued. Writes the relay does not watch (other
                # collections, other databases on the server) move it on too.
                progress.quiet = (progress.queued, stream.resume_token, datetime.now(UTC))
                await self._until_woken()
                continue
            await queue.put(change)
            progress.queued += 1
        raise RuntimeError("the change stream ended")  # invalidated (e.g. its collection dropped)

    async def _until_woken(self) -> None:
        """Caught up: wait for this process's next write with events, or the next poll.

        The flag is cleared after the wait, before the next getMore: a write committed later wakes
        it again, one committed earlier is in that getMore.
        """
        try:
            await asyncio.wait_for(self._wakeup.wait(), self._poll_s)
        except TimeoutError:
            pass
        self._wakeup.clear()

    async def _publish_from(self, queue: asyncio.Queue[Document], progress: _Progress) -> None:
        """Publish what the queue holds (up to ``batch``), then note the position; store it now and then."""
        while True:
            try:
                first = await asyncio.wait_for(queue.get(), self._settle_s)
            except TimeoutError:
                if self._events_unsaved:  # idle after publishing: store where we are
                    await self._save(self._published, force=True)
                elif time.monotonic() - self._saved_at >= self._quiet_checkpoint_s:
                    self._adopt_quiet_position(progress)  # only other writes since: now and then
                    await self._save(self._published, force=True)
                continue
            upto = datetime.now(UTC) - WRITE_MARGIN
            changes = [first]
            while len(changes) < self._batch and not queue.empty():
                changes.append(queue.get_nowait())
            await self._publish_changes(changes)
            progress.published += len(changes)
            # A change's _id is the token to resume after it.
            self._published, self._published_upto = changes[-1]["_id"], upto
            self._events_unsaved = True
            await self._save(self._published, force=False)

    def _adopt_quiet_position(self, progress: _Progress) -> None:
        """Move the position past what the stream skipped, once everything queued before it is out.

        Without this an idle relay keeps the token of its last event while the server's oplog moves
        on; a restart then has the server scan all of that again, and on a busy server the scan
        outlasted the client's timeout every time: the relay restarted from the same old token for
        good and published nothing.
        """
        if progress.quiet is None:
            return
        queued, token, seen_at = progress.quiet
        if token is not None and queued == progress.published and token != self._published:
            self._published = token
            self._published_upto = max(self._published_upto, seen_at - WRITE_MARGIN)

    async def _publish_changes(self, changes: list[Document]) -> None:
        """Each document's events in order; different documents' at once."""
        by_doc: dict[tuple[str, Any], list[tuple[str, list[Any]]]] = {}
        for change in changes:
            coll = change["ns"]["coll"]
            key = (coll, repr(change["documentKey"]))
            by_doc.setdefault(key, []).append((coll, _events_of(change)))
        results = await asyncio.gather(
            *(self._publish_doc(writes) for writes in by_doc.values()), return_exceptions=True
        )
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            raise failure
        if changes:
            last = changes[-1].get("wallTime")
            if isinstance(last, datetime):
                metrics.EVENT_RELAY_LAG.set(
                    max(0.0, (datetime.now(UTC) - last.replace(tzinfo=UTC)).total_seconds())
                )

    async def _publish_doc(self, writes: list[tuple[str, list[Any]]]) -> None:
        for coll, entries in writes:
            for attempt in range(self.entries.max_attempts + 1):
                try:
                    await self.entries.publish_all(coll, entries, [])
                    break
                except TRANSIENT:
                    raise
                except Exception:
                    # Refused, not yet dead-lettered: counted by the publisher; try again shortly.
                    if attempt == self.entries.max_attempts:
                        raise
                    await asyncio.sleep(self._retry_pause_s)

    async def _recover(self, stored: Document, exc: OperationFailure) -> None:
        """The stored position is gone: start from now, then publish again what was written since."""
        since = stored.get("at")
        log.error(
            "%s: the change stream cannot resume from the stored position (%s); publishing again the "
            "latest events of every document written since %s, anything older was lost",
            self.name,
            exc.code,
            since,
        )
        upto = datetime.now(UTC) - WRITE_MARGIN
        async with await self._db.watch(self.pipeline) as stream:
            now_token = stream.resume_token
        for name in self._collections:
            query: Document = {WRITTEN_AT: {"$gte": since}} if since else {WRITTEN_AT: {"$exists": True}}
            async for doc in self._db[name].find(query, {"outbox": 1}).sort(WRITTEN_AT, 1):
                await self._publish_doc([(name, doc.get("outbox") or [])])
        self._published_upto = upto
        await self._save(now_token, force=True)

    async def _stored(self) -> Document | None:
        stored = await stored_position(self._db, self.name)
        if stored is not None:
            self._seq = max(self._seq, _seq_of(stored))
            self._legacy = self._legacy or stored["_id"] == self.name
        return stored

    async def _save(self, token: Mapping[str, Any] | None, *, force: bool) -> None:
        if token is None:
            return
        if token == self._saved:
            self._events_unsaved = False
            return
        if not force and time.monotonic() - self._saved_at < self._checkpoint_s:
            return
        unsaved = self._events_unsaved
        self._events_unsaved = False
        self._seq = max(time.time_ns(), self._seq + 1)
        key = f"{self.name}/{self._seq:020d}.{self._process}"
        position = {"_id": key, "relay": self.name, "token": dict(token), "at": self._published_upto}
        try:
            await self._db[POSITIONS].insert_one(position)  # a new document: never an update
        except BaseException:
            self._events_unsaved = self._events_unsaved or unsaved
            raise
        self._saved, self._saved_at = token, time.monotonic()
        self._since_prune += 1
        if self._legacy or self._since_prune >= self._keep_positions:
            await self._prune(key)

    async def _prune(self, newest: str) -> None:
        """Remove this relay's positions older than ``newest`` (any replica's) and the old-shape
        document, in one delete; the newest stored position is never among them."""
        try:
            await self._db[POSITIONS].delete_many(
                {"$or": [{"_id": self.name}, {"_id": {"$gt": f"{self.name}/", "$lt": newest}}]}
            )
        except Exception:  # the position is stored; the next save prunes again
            log.warning("%s: old stream positions not removed", self.name, exc_info=True)
            return
        self._since_prune, self._legacy = 0, False


WRITE_COMMANDS = frozenset({"insert", "update", "delete", "findAndModify"})


class OwnWrites(monitoring.CommandListener):
    """Calls ``wake`` after each successful write command of this client to ``collections`` of ``db``.

    Registered on the service's database client, so every write that can carry events wakes the
    relay at once, whichever code path made it; the relay's poll covers anything else.
    """

    def __init__(self, db: str, collections: Iterable[str], wake: Callable[[], None]) -> None:
        self._db = db
        self._collections = frozenset(collections)
        self._wake = wake
        self._writes: set[int] = set()  # request ids of writes in flight

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        if (
            name in WRITE_COMMANDS
            and event.database_name == self._db
            and event.command.get(name) in self._collections
        ):
            self._writes.add(event.request_id)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.request_id in self._writes:
            self._writes.discard(event.request_id)
            self._wake()

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        # A write that failed on the wire may still have committed: wake anyway.
        if event.request_id in self._writes:
            self._writes.discard(event.request_id)
            self._wake()


class _Progress:
    """What the reader queued and the publisher sent on one stream, and its last quiet position."""

    def __init__(self) -> None:
        self.queued = 0
        self.published = 0
        self.quiet: tuple[int, Mapping[str, Any] | None, datetime] | None = None


def events_pipeline(collections: Iterable[str]) -> list[Document]:
    """Only writes of ``collections`` that carry events (an update without events is not seen)."""
    return [
        {
            "$match": {
                "ns.coll": {"$in": list(collections)},
                "$or": [
                    {"operationType": {"$in": ["insert", "replace"]}, "fullDocument.outbox": {"$ne": []}},
                    {"operationType": "update", "updateDescription.updatedFields.outbox": {"$exists": True}},
                ],
            }
        }
    ]


async def unpublished(
    db: AsyncDatabase[Document], collections: Iterable[str], name: str, most: int = 100
) -> int:
    """Writes whose events a relay may not have published yet, up to ``most`` (0: settled).

    For tests and checks, in either mode: documents still flagged in the in-document outbox plus
    changes after the change-stream relay ``name``'s stored position (which lags the relay by up
    to its checkpoint interval).
    """
    names = list(collections)
    total = 0
    for coll in names:
        total += await db[coll].count_documents({PENDING: True})
    stored = await stored_position(db, name)
    if stored is None:
        return total
    async with await db.watch(
        events_pipeline(names), resume_after=stored["token"], max_await_time_ms=50
    ) as stream:
        while total < most and await stream.try_next() is not None:
            total += 1
    return total


async def stored_position(db: AsyncDatabase[Document], name: str) -> Document | None:
    """The relay ``name``'s newest stored position (``_id``, ``token``, ``at``), or None.

    Its positions' ids are ``<name>/<seq>.<process>``: all between ``<name>/`` and ``<name>0``
    ("0" follows "/"), the newest last, so one read of the ``_id`` index finds it. Before those, a
    relay kept one document ``{_id: <name>}`` updated in place: read when nothing newer exists.
    """
    positions = db[POSITIONS]
    newest = await positions.find_one(
        {"_id": {"$gt": f"{name}/", "$lt": f"{name}0"}}, sort=[("_id", DESCENDING)]
    )
    return newest if newest is not None else await positions.find_one({"_id": name})


def _seq_of(position: Document) -> int:
    """The sequence in a position's ``_id`` (0 for the old single document)."""
    _, _, rest = str(position["_id"]).rpartition("/")
    digits = rest.partition(".")[0]
    return int(digits) if digits.isdigit() else 0


def _events_of(change: Document) -> list[Any]:
    if change["operationType"] == "update":
        return list(change["updateDescription"]["updatedFields"].get("outbox") or [])
    return list((change.get("fullDocument") or {}).get("outbox") or [])
