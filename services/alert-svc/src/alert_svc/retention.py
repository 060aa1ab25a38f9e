"""Retention of ``alert_occurrences``: an occurrence lives until its alert has folded it in.

The write that folds a tail deletes it right after (``Occurrences.forget_folded``); this sweep
removes what that leaves: occurrences folded just before a crash, and, with the outbox relay, those
whose event had not been published yet when they were folded. It reads every occurrence once per
``MW_ALERT_OCCURRENCE_SWEEP_S`` in pages (what stays between sweeps is the unfolded tails, at most
FOLD_EVERY - 1 per open per-mailbox alert), so the collection is bounded like the alerts themselves.
"""

from __future__ import annotations

import logging

from alert_svc.store.occurrences import Occurrences
from mailwarden_runtime.loop import BackgroundLoop

log = logging.getLogger(__name__)

PAGE = 500


class OccurrenceRetention:
    def __init__(self, occurrences: Occurrences, interval_s: float, page: int = PAGE) -> None:
        self.occurrences = occurrences
        self.page = page
        self._after: str | None = None
        self._deleted = 0
        self._loop = BackgroundLoop("occurrence-retention", self.sweep_page, interval_s)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def sweep_page(self) -> bool:
        """One page; True while the sweep has more to read (the loop goes on at once)."""
        self._after, deleted = await self.occurrences.sweep_unread(self._after, self.page)
        self._deleted += deleted
        if self._after is not None:
            return True
        if self._deleted:
            log.info("folded alert occurrences deleted", extra={"deleted": self._deleted})
        self._deleted = 0
        return False

    async def sweep(self) -> int:
        """A whole sweep at once (tests, tools): how many occurrences were deleted."""
        total = 0
        while True:
            self._after, deleted = await self.occurrences.sweep_unread(self._after, self.page)
            total += deleted
            if self._after is None:
                return total
