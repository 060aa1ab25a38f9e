"""Connections per host: the profile's maximum concurrent connections, across every sync worker.

Two gates per connection. The local one counts this process's connections (no KV round trip
for a session that could not connect here anyway). The shared one, with ``leases``, is a host
lease in NATS KV (:mod:`mailwarden_runtime.hostleases`, the testers' mechanism), renewed while
the session lasts, so at most ``limit`` sessions of all workers together talk to one host; a
killed worker's leases free within their TTL.

A sync pass waits for both; an idling session takes them only if they are free at once (else the
mailbox polls), and only within :func:`idle_slots` (the limit less a quarter, at least one), so
idlers, which keep their slot, never starve the polls of their host: with 1,000 mailboxes on a host
that allows 300 connections, 299 idlers left one slot to 701 polling mailboxes, whose first syncs
then ran one at a time (bench/sync_many.py); now 225 idle and 75 slots serve the polls. Beyond
that, a pass waiting here for a slot asks idlers of its host to give theirs up (:meth:`wanted`,
:meth:`should_yield`): one idler per waiting pass ends its IDLE, logs out and polls from then on,
so a backlog of first syncs gets every slot of its host, not only the polls' quarter (within
this process: a pass waiting on another worker's leases is not seen here). When KV does not answer, the
sessions go on under the local gate alone (logged once, as the tester does): refusing would
report our own outage as every mailbox's failure; the worst case is then each worker allowing
the limit, the pre-sharing behaviour, for the length of the outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator

from mailwarden_runtime.hostleases import HostLeases, Lease
from mailwarden_runtime.sharedkv import KvUnavailable

log = logging.getLogger(__name__)

WAIT_FIRST_S = 0.05  # first pause while a host is full on every worker; doubles up to WAIT_MAX_S
WAIT_MAX_S = 2.0


def idle_slots(limit: int) -> int:
    """How many of a host's ``limit`` connections idling sessions may hold: a quarter (at least
    one) stays for the polls; a limit of 1 means polling only."""
    return limit - max(1, limit // 4)


class HostSlots:
    def __init__(self, leases: HostLeases | None = None) -> None:
        self.leases = leases
        self._used: dict[str, int] = {}
        self._freed = asyncio.Condition()
        self._waiting: dict[str, int] = {}  # passes waiting for a local slot, per host
        self._yielding: dict[str, int] = {}  # idlers asked to give theirs up, not yet taken over
        self._wanted: dict[str, asyncio.Event] = {}

    def _take_local(self, host: str, limit: int) -> bool:
        key = host.lower()
        if self._used.get(key, 0) >= limit:
            return False
        self._used[key] = self._used.get(key, 0) + 1
        return True

    async def _give_back_local(self, host: str) -> None:
        key = host.lower()
        self._used[key] = max(0, self._used.get(key, 0) - 1)
        async with self._freed:
            self._freed.notify_all()

    def wanted(self, host: str) -> asyncio.Event:
        """Set while a pass waits for one of ``host``'s slots here: idlers then ask :meth:`should_yield`."""
        return self._wanted.setdefault(host.lower(), asyncio.Event())

    def should_yield(self, host: str) -> bool:
        """Whether this idler gives its slot up: one per waiting pass not already given one."""
        key = host.lower()
        if self._waiting.get(key, 0) > self._yielding.get(key, 0):
            self._yielding[key] = self._yielding.get(key, 0) + 1
            return True
        self.wanted(host).clear()
        return False

    async def _wait_local(self, host: str, limit: int) -> None:
        key = host.lower()
        if self._take_local(host, limit):
            return
        self._waiting[key] = self._waiting.get(key, 0) + 1
        self.wanted(host).set()
        try:
            await self._freed.wait_for(lambda: self._take_local(host, limit))
        finally:
            self._waiting[key] -= 1
            self._yielding[key] = max(0, self._yielding.get(key, 0) - 1)

    async def _try_lease(self, host: str, limit: int) -> Lease | bool:
        """A shared lease; True when there is no shared gate (none, or KV away); False when every
        worker's slots for the host are held."""
        if self.leases is None:
            return True
        lease_id = self.leases.new_id()
        try:
            return await self.leases.try_acquire(host, limit, lease_id) or False
        except KvUnavailable:
            return True
        except asyncio.CancelledError:
            with contextlib.suppress(KvUnavailable, asyncio.CancelledError):
                await asyncio.shield(self.leases.abandon(lease_id))
            raise

    async def _release(self, lease: Lease | bool) -> None:
        if self.leases is not None and isinstance(lease, Lease):
            with contextlib.suppress(KvUnavailable):
                await self.leases.release(lease)

    @contextlib.asynccontextmanager
    async def at_once(self, host: str, limit: int) -> AsyncIterator[bool]:
        """Yields True holding a slot taken without waiting, False (holding nothing) if none is free."""
        if not self._take_local(host, limit):
            yield False
            return
        lease: Lease | bool = False
        try:
            lease = await self._try_lease(host, limit)
            yield lease is not False
        finally:
            await self._release(lease)
            await self._give_back_local(host)

    @contextlib.asynccontextmanager
    async def slot(self, host: str, limit: int) -> AsyncIterator[None]:
        """Waits for a slot here, then for a lease across workers (growing jittered pauses)."""
        async with self._freed:
            await self._wait_local(host, limit)
        lease: Lease | bool = False
        try:
            pause = WAIT_FIRST_S
            while (lease := await self._try_lease(host, limit)) is False:
                await asyncio.sleep(pause * random.uniform(0.5, 1.0))
                pause = min(WAIT_MAX_S, pause * 2)
            yield
        finally:
            await self._release(lease)
            await self._give_back_local(host)

    async def close(self) -> None:
        """At shutdown, after the sessions ended: stop renewing what is left (it expires)."""
        if self.leases is not None:
            await self.leases.close()
