"""Database calls of every mailbox task, sent together: one writer (or reader) per collection.

Hundreds of first syncs each wrote their ``state`` and ledger documents and read their state
on their own: the writes to one collection queue on SecantusDB's per-collection lock (one
transaction per write), and 500 concurrent passes waited more than pymongo's 10 s for one of its
100 pooled connections, failed and backed off (bench/README.md, many small mailboxes). Here a
task hands its call in and awaits it; the batcher sends everything handed in while its previous
call was in flight as the next bulk write or ``$in`` read. A caller still returns only once its
own write is stored (or raises its own error), so a watermark never moves before the ledger
entries it covers; nothing waits for a timer: a lone call goes out at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_BATCH = 500


class Failed:
    """One item's own error in a batch's outcomes."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


Flush = Callable[[Sequence[T]], Awaitable[Sequence["R | Failed"]]]
"""Handles a batch: per item its result or :class:`Failed`. Raising fails the whole batch."""


class Batcher(Generic[T, R]):
    def __init__(self, flush: Flush[T, R], max_batch: int = MAX_BATCH) -> None:
        self._flush = flush
        self.max_batch = max_batch
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    async def __call__(self, item: T) -> R:
        """The item's result once its batch is done; raises the item's own error, or the batch's."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="sync-batcher")
        return await future

    async def _drain(self) -> None:
        """Until nothing waits: take what is there (at most ``max_batch``), send it, answer each."""
        while self._waiting:
            batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
            outcomes: Sequence[R | Failed]
            try:
                outcomes = await self._flush([item for item, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch + self._waiting:
                    future.cancel()
                self._waiting = []
                raise
            except Exception as exc:  # the database away: every caller of this batch gets it
                outcomes = [Failed(exc)] * len(batch)
            self.batches += 1
            self.items += len(batch)
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():  # its caller was cancelled meanwhile
                    continue
                if isinstance(outcome, Failed):
                    future.set_exception(outcome.error)
                else:
                    future.set_result(outcome)
