"""Batches of staged messages published behind the reader: the IMAP stream never waits for an ack.

The reader adds each fetched message (parsed, its event built: no bus call); every ``size``
messages, or ``max_bytes`` of raw messages, form a batch. One task releases the batches in order (their raw objects stored, then
their events sent), a second confirms them in order (the events' acks, then ``stored``: the
ledger and the watermark). So batch n+1's events go out while batch n's acks and database writes
are awaited, and the event order on the bus is the UID order. :meth:`Pipeline.then` queues a call
(a window's watermark write) behind the batches added before it, so the reader goes on fetching
while it waits for them. At most ``depth`` batches wait at each stage, so a slow bus slows the reader down instead of filling the memory. A failure is kept
and raised by :meth:`Pipeline.close`, outside the reader's protocol step: our bus or database
being away is not the mailbox server's failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType

from nats.js.api import PubAck

from contracts.email import SyncProtocol
from sync_svc.documents import LedgerEntry
from sync_svc.publisher import Fetched, Publisher, Staged
from sync_svc.targets import SyncTarget

Stored = Callable[[list[LedgerEntry]], Awaitable[None]]
"""Records a batch's ledger entries once its events are stored in JetStream."""
STORING = 4  # ledger writes of one pipeline in flight at once
BATCH_BYTES = 8 * 1024 * 1024  # raw bytes held in one batch at most (its messages are sent together)
After = Callable[[], Awaitable[None]]
"""Called once every batch added before it is stored (:meth:`Pipeline.then`)."""
Released = tuple[list[Staged], list["asyncio.Future[PubAck]"]] | After


class Pipeline:
    def __init__(
        self,
        publisher: Publisher,
        target: SyncTarget,
        protocol: SyncProtocol,
        stored: Stored,
        size: int,
        depth: int = 2,
        max_bytes: int = BATCH_BYTES,
    ) -> None:
        self.publisher = publisher
        self.target = target
        self.protocol: SyncProtocol = protocol
        self._stored = stored
        self.size = size
        self.max_bytes = max_bytes
        self._batch: list[Staged] = []
        self._batch_bytes = 0
        self._staged: asyncio.Queue[list[Staged] | After | None] = asyncio.Queue(maxsize=depth)
        self._released: asyncio.Queue[Released | None] = asyncio.Queue(maxsize=depth)
        self._tasks: list[asyncio.Task[None]] = []
        self.error: BaseException | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    async def __aenter__(self) -> Pipeline:
        self._tasks = [asyncio.create_task(self._release()), asyncio.create_task(self._confirm())]
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:  # the reader failed: nothing more is published
            await self._abort()
            return
        await self.close()

    async def add(self, msg: Fetched) -> bool:
        """Stage one message; False once the pipeline failed (the reader stops fetching)."""
        if self.error is not None:
            return False
        staged = self.publisher.stage(self.target, msg, self.protocol)
        self._batch.append(staged)
        self._batch_bytes += staged.raw_bytes
        if len(self._batch) >= self.size or self._batch_bytes >= self.max_bytes:
            await self.cut()
        return self.error is None

    async def cut(self) -> None:
        """Hand the messages staged so far on as one batch."""
        if self._batch:
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            await self._staged.put(batch)

    async def then(self, after: After) -> None:
        """Call ``after`` once every message added so far is stored, in order with the batches:
        off the reader's path (a failure of it is the pipeline's, raised by :meth:`close`)."""
        await self.cut()
        await self._staged.put(after)

    async def close(self) -> None:
        """Publish what is left and wait for every batch; raises the first failure."""
        try:
            await self.cut()
            await self._staged.put(None)
            await asyncio.gather(*self._tasks)
        except BaseException:  # cancelled while waiting: the stages must not outlive the pass
            await self._abort()
            raise
        if self.error is not None:
            raise self.error

    async def _abort(self) -> None:
        self._batch = []
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while not self._staged.empty():
            self._staged.get_nowait()
        while not self._released.empty():
            if isinstance(done := self._released.get_nowait(), tuple):
                for ack in done[1]:
                    ack.cancel()

    async def _release(self) -> None:
        try:
            while (batch := await self._staged.get()) is not None:
                if self.error is not None:  # keep draining so the reader never blocks on a full queue
                    continue
                if not isinstance(batch, list):
                    await self._released.put(batch)  # a call: the confirming stage makes it in turn
                    continue
                try:
                    await self._released.put((batch, await self.publisher.release(batch)))
                except Exception as exc:
                    self.error = exc
        finally:
            await self._released.put(None)

    async def _confirm(self) -> None:
        """Await each batch's acks in order; its ledger write is handed in and not waited for
        before the next batch's acks (at most ``STORING`` in flight: the ledger's batcher sends
        what waits meanwhile as one insert). One write per batch, awaited in turn, bounded a big
        first sync at ~700-1,000 messages a second once writes waited for the journal
        (bench/README.md, one big INBOX). A queued call waits for every write before it."""
        storing: list[asyncio.Task[None]] = []
        try:
            while (released := await self._released.get()) is not None:
                if not isinstance(released, tuple):
                    await asyncio.gather(*storing)
                    storing.clear()
                    if self.error is None:
                        try:
                            await released()
                        except Exception as exc:
                            self.error = exc
                    continue
                batch, acks = released
                if self.error is not None:
                    for ack in acks:
                        ack.cancel()
                    continue
                try:
                    entries = await self.publisher.confirm(batch, acks)
                except Exception as exc:
                    self.error = exc
                    continue
                storing.append(asyncio.create_task(self._store(entries)))
                if len(storing) >= STORING:
                    await storing.pop(0)
            await asyncio.gather(*storing)
        finally:
            for task in storing:
                task.cancel()  # no-op once done
            await asyncio.gather(*storing, return_exceptions=True)

    async def _store(self, entries: list[LedgerEntry]) -> None:
        try:
            await self._stored(entries)
        except Exception as exc:
            self.error = self.error or exc
