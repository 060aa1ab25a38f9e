"""Sends believed due, per mailbox: a sender claims one by its id instead of searching the queue.

Claiming by id is one indexed lookup; searching the queue for the oldest due send on every claim
costs a scan per message (60-230 ms each on SecantusDB with 1,000 queued). Local submissions are
offered here at once; a periodic sweep of the database (:meth:`SendStore.due`) adds the rest:
other replicas' submissions, retries come due, sends left by a stopped process. An id here is only
a hint: the claim checks the send is still queued, due and free, so stale or shared hints are
harmless. Per-mailbox order keeps a burst on one warm connection and lets a throttled mailbox
wait without holding the others back. A send queued by this process comes with its document,
already claimed for this process when it was inserted, and its built message (:meth:`held`): no
claim round trip, no second build.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sender_svc.submit import Queued


class Candidates:
    def __init__(self) -> None:
        self._by_mailbox: dict[str, deque[str]] = {}
        self._known: set[str] = set()
        self._held: dict[str, Queued] = {}
        self._busy: dict[str, int] = {}  # mailbox -> loops sending for it now
        self.changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._known)

    def add(self, mailbox_id: str, send_id: str, queued: Queued | None = None) -> None:
        """A hint; ``queued``: the send as inserted here, claimed for this process (see :meth:`held`)."""
        if queued is not None:
            self._held[send_id] = queued
        if send_id in self._known:
            return
        self._known.add(send_id)
        self._by_mailbox.setdefault(mailbox_id, deque()).append(send_id)
        self.changed.set()

    def take(self, prefer: str | None, ready: Callable[[str], bool]) -> tuple[str, str] | None:
        """The next (mailbox, send id): ``prefer``'s first when it is ``ready``, else the first
        ready mailbox's in turn (a served mailbox goes to the back). ``ready`` may take a rate
        token: it is asked once per mailbox, and an answer of True is always used."""
        first = [prefer] if prefer is not None and prefer in self._by_mailbox else []
        # Mailboxes no loop is sending for come first: a second loop on a busy mailbox would need
        # a second login while the first loop's connection is about to be free for it.
        order = [*first, *(m for m in self._by_mailbox if not self._busy.get(m))]
        order += [m for m in self._by_mailbox if self._busy.get(m)]
        for mailbox_id in dict.fromkeys(order):
            if not ready(mailbox_id):
                continue
            ids = self._by_mailbox.pop(mailbox_id)
            send_id = ids.popleft()
            if ids:
                self._by_mailbox[mailbox_id] = ids  # to the back: the others get their turn
            self._known.discard(send_id)
            return mailbox_id, send_id
        return None

    def busy(self, mailbox_id: str, change: int) -> None:
        """A loop starts (+1) or ends (-1) sending for ``mailbox_id``."""
        count = self._busy.get(mailbox_id, 0) + change
        if count > 0:
            self._busy[mailbox_id] = count
        else:
            self._busy.pop(mailbox_id, None)

    def held(self, send_id: str) -> Queued | None:
        """A send claimed for this process when it was queued here, with its message (taken once)."""
        return self._held.pop(send_id, None)
