"""Final outcomes stored in batches, off the sending loops' path.

A loop hands the outcome of a send (its state, the outcome event and the events that go with it)
over and takes the next message on its connection at once; this writer stores what has gathered
meanwhile in one bulk write (each update conditional on the send's claim token and an active
state, as before) and wakes the event relay. Nothing is lost by the hand-over: until its outcome
is stored, a send stays claimed ('sending' after DATA), so a crash in between is reported
uncertain when its lease ends, never sent again. A failed write is tried again (the database
may be restarting) until it is stored, its claim has run out, or the service stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sender_svc.store.sends import Finish, SendStore

log = logging.getLogger(__name__)
BATCH = 200
RETRY_S = 1.0


class OutcomeWriter:
    def __init__(
        self,
        sends: SendStore,
        wake_relay: Callable[[], None],
        stored: Callable[[list[Finish]], None] = lambda batch: None,
    ) -> None:
        self.sends = sends
        self.wake_relay = wake_relay
        self.stored = stored
        """Told each batch once it is written (the Sent-folder copies start from there)."""
        self._pending: list[Finish] = []
        self._more = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sender-outcomes")

    def put(self, finish: Finish) -> None:
        self._pending.append(finish)
        self._more.set()

    async def _run(self) -> None:
        while True:
            await self._more.wait()
            self._more.clear()
            while self._pending:
                if not await self._write_some():
                    await asyncio.sleep(RETRY_S)

    async def _write_some(self) -> bool:
        """One bulk write of the oldest outcomes; False (kept for the next try) when it failed."""
        batch = self._pending[:BATCH]
        try:
            stored = await self.sends.finish_many(batch)
        except Exception:
            log.exception("storing outcomes failed; trying again", extra={"outcomes": len(batch)})
            return False
        del self._pending[: len(batch)]
        if stored < len(batch):
            log.warning(
                "outcomes not stored: their sends were taken from this sender",
                extra={"outcomes": len(batch) - stored},
            )
        if stored:
            self.wake_relay()
            self.stored(batch)
        return True

    async def stop(self, grace_s: float) -> None:
        """Store what is handed over (within ``grace_s``), then end."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                while self._pending and await self._write_some():
                    pass
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
