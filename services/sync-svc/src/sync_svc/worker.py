"""The worker loop: which mailboxes this process synchronizes, started and stopped as things change.

Every ``sync_reconcile_s`` it: says it is alive and counts the live workers; renews its leases
(every TTL/3); re-reads the read models when their revision moved (an event or a control
changed something); stops the tasks of mailboxes no longer to be synced, paused, changed (their
target's fingerprint or control generation moved) or whose lease ran out; takes leases on
unclaimed mailboxes up to its fair share, in random order; and starts a task for each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import nats.errors

from contracts.models import IncomingProtocol
from mailwarden_runtime.bounded import cancel_and_wait, honour_cancellation
from sync_svc import metrics
from sync_svc.documents import SyncStateDoc
from sync_svc.imap_sync import ImapSync
from sync_svc.leases import KV_ERRORS, LeaseTable
from sync_svc.pop3_sync import Pop3Sync
from sync_svc.session import MailboxSync, Services
from sync_svc.targets import SyncTarget, target_of

log = logging.getLogger(__name__)

SETTLE_S = 0.1  # after a wake-up, how long to let more changes arrive before reloading
RELOAD_PAUSE_MAX_S = 1.0  # the longest pause between reloads, however long the last one took
STOP_WAIT_S = 2.0
LEASE_CALLS_AT_ONCE = 32  # lease takes and renewals in flight together (NATS KV round trips)


async def at_most(n: int, calls: Iterable[Awaitable[object]]) -> None:
    """Await ``calls``, ``n`` at a time; the first error is raised once all of a round ended."""
    pending = list(calls)
    for start in range(0, len(pending), n):
        results = await asyncio.gather(*pending[start : start + n], return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                for rest in pending[start + n :]:
                    getattr(rest, "close", lambda: None)()  # never awaited: no warning
                raise result  # how long a stop waits for one mailbox's task to end after its cancellation


@dataclass
class Running:
    task: asyncio.Task[None]
    fingerprint: str
    generation: int


class Worker:
    def __init__(
        self,
        services: Services,
        leases: LeaseTable,
        *,
        reconcile_s: float,
        poll_floor_s: float,
        max_mailboxes: int,
        rng: random.Random | None = None,
    ) -> None:
        self.s = services
        self.leases = leases
        self.reconcile_s = reconcile_s
        self.poll_floor_s = poll_floor_s
        self.max_mailboxes = max_mailboxes
        self.rng = rng or random.Random()
        self.running: dict[str, Running] = {}
        self.targets: dict[str, SyncTarget] = {}
        self.controls: dict[str, SyncStateDoc] = {}
        self._revision = -1
        self._workers = 1
        self._last_renew = 0.0
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._dirty = False
        self._load_s = 0.0
        self._loaded_at = 0.0
        self.loaded = asyncio.Event()
        """Set once the read models were read (a service that answers events from then on)."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="sync-worker")

    def wake(self) -> None:
        self._wake.set()

    def changed(self) -> None:
        """An event changed the read models: reload, and tell the other workers (one revision bump
        per reload, not one database write per event: a backlog of thousands of events after a
        restart, or the enabling of 1,000 mailboxes, would otherwise write and reload per event)."""
        self._dirty = True
        self._wake.set()

    async def stop(self) -> None:
        await cancel_and_wait(self._task, STOP_WAIT_S)
        await asyncio.gather(*(self._stop_one(m) for m in list(self.running)))
        with contextlib.suppress(*KV_ERRORS):
            await self.leases.release_all()

    async def _loop(self) -> None:
        while True:
            honour_cancellation()
            try:
                await self.reconcile()
            except (*KV_ERRORS, nats.errors.Error) as exc:
                log.warning("sync reconcile: NATS KV unavailable", extra={"error": type(exc).__name__})
            except Exception:
                log.exception("sync reconcile failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.reconcile_s):
                    await self._wake.wait()
            await asyncio.sleep(self._pause())
            self._wake.clear()

    def _pause(self) -> float:
        """How long to let more changes arrive before the next reload.

        A burst of events: one reload for all of them, and reloads (which read every mailbox) at
        most a ninth of the time: with 1,000 mailboxes being enabled, a reload per wake-up cost
        more CPU (ours and the database's) the more there were. Counted from the end of the last
        reload, so a change after a quiet spell waits only ``SETTLE_S`` (a mailbox enabled then
        starts ~0.1 s after its events, not 8 reloads' time later). Capped: a reload slowed by a
        busy database (6 s while 200 first syncs wrote) once paused the next for 50 s, and the
        mailboxes enabled meanwhile waited that long to start (bench/sync_many.py)."""
        since = time.monotonic() - self._loaded_at
        return min(RELOAD_PAUSE_MAX_S, max(SETTLE_S, 8 * self._load_s - since))

    async def _load(self) -> None:
        if self._dirty:
            self._dirty = False
            try:
                await self.s.stores.revision.bump()
            except BaseException:
                self._dirty = True
                raise
        revision = await self.s.stores.revision.current()
        if revision == self._revision:
            return
        started = time.monotonic()
        read = self.s.stores.read
        profiles, settings = await read.all_profiles(), await read.get_settings()
        targets: dict[str, SyncTarget] = {}
        for entry in await read.all_mailboxes():
            if entry.snapshot is None:
                continue
            profile = profiles.get(entry.snapshot.profile_id or "")
            target = target_of(entry.snapshot, entry.enabled_incoming, profile, settings, self.poll_floor_s)
            if target is not None:
                targets[entry.id] = target
        self.targets = targets
        self.controls = await self.s.stores.states.states(targets)
        self._loaded_at = time.monotonic()
        if self._revision != -1:  # the first also opened the database connections: no measure
            self._load_s = self._loaded_at - started
        self._revision = revision
        self.loaded.set()

    def _wanted(self) -> dict[str, SyncTarget]:
        return {m: t for m, t in self.targets.items() if not self._control(m).paused}

    def _control(self, mailbox_id: str) -> SyncStateDoc:
        return self.controls.get(mailbox_id) or SyncStateDoc(id=mailbox_id)

    async def reconcile(self) -> None:
        try:
            await self._load()
        except Exception as exc:  # the database away: go on with what was last read
            log.warning("sync read models not reloaded", extra={"error": type(exc).__name__})
        wanted = self._wanted()
        now = time.monotonic()
        if now - self._last_renew >= self.leases.ttl_s / 3:
            self._last_renew = now
            try:
                self._workers = await self.leases.heartbeat()
                await at_most(LEASE_CALLS_AT_ONCE, map(self.leases.renew, list(self.leases.held)))
            except (*KV_ERRORS, nats.errors.Error) as exc:
                # KV away: leases run out on their own; the tasks of expired ones stop below, so no
                # mailbox is synced by two workers once another takes it over.
                log.warning("sync leases not renewed", extra={"error": type(exc).__name__})
        for mailbox_id in list(self.running):
            target = wanted.get(mailbox_id)
            run = self.running[mailbox_id]
            generation = self._control(mailbox_id).generation
            reason = (
                "not to be synced"
                if target is None
                else "lease expired"
                if not self.leases.still_valid(mailbox_id)
                else "target changed"
                if target.fingerprint != run.fingerprint
                else "control changed"
                if generation != run.generation
                else "task ended"
                if run.task.done()
                else None
            )
            if reason is not None:
                log.info("mailbox sync stopped", extra={"mailbox_id": mailbox_id, "reason": reason})
                await self._stop_one(mailbox_id)
        for mailbox_id in list(self.leases.held):
            if mailbox_id not in wanted or not self.leases.still_valid(mailbox_id):
                await self.leases.release(mailbox_id)
        share = self.leases.fair_share(len(wanted), self._workers, self.max_mailboxes)
        excess = list(self.leases.held)[share:]  # another worker joined: hand the surplus over
        for mailbox_id in excess:
            await self._stop_one(mailbox_id)
            await self.leases.release(mailbox_id)
        free = [m for m in wanted if m not in self.leases.held]
        self.rng.shuffle(free)
        while free and len(self.leases.held) < share:
            # A KV round trip each: 1,000 one after the other held every start back by seconds.
            batch, free = free[: share - len(self.leases.held)], free[share - len(self.leases.held) :]
            await at_most(LEASE_CALLS_AT_ONCE, map(self.leases.acquire, batch))
        for mailbox_id in self.leases.held:
            if mailbox_id not in self.running and mailbox_id in wanted:
                self._start_one(wanted[mailbox_id])
        metrics.MAILBOXES.set(len(self.running))

    def _start_one(self, target: SyncTarget) -> None:
        cls: Callable[[Services, SyncTarget], MailboxSync] = (
            ImapSync if target.protocol is IncomingProtocol.IMAP else Pop3Sync
        )
        sync = cls(self.s, target)
        generation = self._control(target.mailbox_id).generation
        task = asyncio.create_task(sync.run(), name=f"sync-{target.mailbox_id}")
        self.running[target.mailbox_id] = Running(task, target.fingerprint, generation)

    async def _stop_one(self, mailbox_id: str) -> None:
        """Cancel a mailbox's task and wait a bounded time: never hang the reconcile on it.

        A task whose library swallowed the cancellation ends at its next turn (its loop checks
        ``cancelling()``); waiting for it unbounded once held the whole worker, so no mailbox
        enabled meanwhile was started (the slow first sync of tests/integration/test_sync_e2e.py).
        """
        run = self.running.pop(mailbox_id, None)
        if run is None:
            return
        if not await cancel_and_wait(run.task, STOP_WAIT_S):
            log.warning("mailbox sync did not end when stopped", extra={"mailbox_id": mailbox_id})
        elif not run.task.cancelled() and run.task.exception() is not None:
            log.warning(
                "mailbox sync ended with an error",
                extra={"mailbox_id": mailbox_id, "error": type(run.task.exception()).__name__},
            )
