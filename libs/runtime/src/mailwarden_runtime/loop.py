"""Background loops: one pass of work, run again when woken or after an interval.

The outbox relay, retry schedulers, job runners and delivery workers all have this shape: run a
pass; if it filled a whole batch, run again at once; otherwise sleep until woken or until the
interval passes. A failing pass is logged and retried on the next round, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from mailwarden_runtime.bounded import cancel_and_wait, honour_cancellation

log = logging.getLogger(__name__)


class BackgroundLoop:
    def __init__(
        self,
        name: str,
        run_once: Callable[[], Awaitable[bool | None]],
        interval_s: float,
        *,
        min_pause_s: float = 0.0,
    ) -> None:
        """``run_once`` returns True when it should run again at once (it filled a batch)."""
        self.name = name
        self._run_once = run_once
        self.interval_s = interval_s
        self.min_pause_s = min_pause_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self, timeout_s: float = 5.0) -> bool:
        """Cancel the loop and wait up to ``timeout_s`` for it to end; True when it did."""
        task, self._task = self._task, None
        return await cancel_and_wait(task, timeout_s)

    async def _run(self) -> None:
        while True:
            honour_cancellation()  # a pass that swallowed our cancellation must not keep us looping
            try:
                more = True
                while more:
                    more = bool(await self._run_once())
                    honour_cancellation()
            except Exception:
                log.warning("%s pass failed; will retry", self.name, exc_info=True)
            if self.min_pause_s:
                # Work arrives in bursts: one pass per short pause serves a burst, not one pass each.
                await asyncio.sleep(self.min_pause_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
