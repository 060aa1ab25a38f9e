"""Logged-in SMTP connections kept for the next message of the same login, within host limits.

A host (host:port) has at most the profile's ``max_concurrent_connections`` connections, idle
ones included: in this process (a local gate, no round trip when this process is full anyway)
and, with ``leases``, across every replica (:class:`~mailwarden_runtime.hostleases.HostLeases`
in JetStream KV: each open connection holds a renewed lease, released when it closes; a killed
replica's leases expire within their TTL). When a new login needs a slot on a full host, an idle
connection of that host is closed for it. An idle connection is closed after
``MW_SENDER_IDLE_KEEP_S``. KV not answering: the local bound alone, logged, until it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mailwarden_mailnet.smtp import SmtpConnection
from mailwarden_runtime.hostleases import HostLeases, Lease
from mailwarden_runtime.sharedkv import KvUnavailable
from sender_svc import metrics

log = logging.getLogger(__name__)
WAIT_FIRST_S = 0.02  # first pause while a host is full across the replicas; doubles up to WAIT_MAX_S
WAIT_MAX_S = 0.5

Opener = Callable[[], Awaitable[SmtpConnection]]


@dataclass
class _Host:
    limit: int
    used: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


@dataclass
class Session:
    """A connection lent out for one message; ``reused`` when it came from the idle pool."""

    key: str
    host: str
    conn: SmtpConnection
    reused: bool
    lease: Lease | None = None
    """The connection's shared slot (None: the local bound only)."""


@dataclass
class _Idle:
    conn: SmtpConnection
    host: str
    since: float
    lease: Lease | None


class ConnectionPool:
    def __init__(self, idle_keep_s: float, leases: HostLeases | None = None) -> None:
        self.idle_keep_s = idle_keep_s
        self.leases = leases
        self._hosts: dict[str, _Host] = {}
        self._idle: dict[str, list[_Idle]] = {}
        self._reaper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_forever(), name="smtp-pool-reaper")

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for key in list(self._idle):
            for idle in self._idle.pop(key):
                await self._drop(idle.conn, idle.host, idle.lease)
        if self.leases is not None:
            await self.leases.close()

    async def acquire(self, key: str, host: str, limit: int, opener: Opener) -> Session:
        """An idle connection of ``key``, else a new one once ``host`` has a free slot (here and,
        with shared leases, across the replicas)."""
        idle = self._idle.get(key)
        while idle:
            item = idle.pop()
            if not item.conn.closed:
                metrics.CONNECTIONS.labels(how="reused").inc()
                return Session(key, item.host, item.conn, reused=True, lease=item.lease)
            await self._release_slot(item.host, item.lease)
        slot = self._hosts.setdefault(host, _Host(limit))
        slot.limit = limit
        async with slot.changed:
            while slot.used >= slot.limit:
                if not await self._evict_one(host):
                    await slot.changed.wait()
            slot.used += 1
        lease: Lease | None = None
        try:
            lease = await self._shared_slot(host, limit)
            conn = await opener()
        except BaseException:
            await self._release_slot(host, lease)
            raise
        metrics.CONNECTIONS.labels(how="opened").inc()
        return Session(key, host, conn, reused=False, lease=lease)

    async def _shared_slot(self, host: str, limit: int) -> Lease | None:
        """A lease on one of ``host``'s ``limit`` slots across the replicas; waits (growing, jittered
        pauses, closing an idle connection of ours to that host when there is one) while all are
        held. None without shared leases or while KV does not answer."""
        if self.leases is None:
            return None
        lease_id = self.leases.new_id()
        pause = WAIT_FIRST_S
        try:
            while True:
                lease = await self.leases.try_acquire(host, limit, lease_id)
                if lease is not None:
                    return lease
                slot = self._hosts[host]
                async with slot.changed:
                    evicted = await self._evict_one(host)
                    slot.changed.notify()
                if not evicted:
                    metrics.HOST_FULL_WAITS.inc()
                    await asyncio.sleep(pause * random.uniform(0.5, 1.0))
                    pause = min(WAIT_MAX_S, pause * 2)
        except KvUnavailable:
            log.warning(
                "shared connection limit unavailable: this process's limit only", extra={"host": host}
            )
            return None
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.leases.abandon(lease_id))
            raise

    async def release(self, session: Session, keep: bool) -> None:
        """Back to the idle pool (``keep`` and still open), else closed and its slot freed."""
        if keep and not session.conn.closed and self.idle_keep_s > 0:
            self._idle.setdefault(session.key, []).append(
                _Idle(session.conn, session.host, time.monotonic(), session.lease)
            )
            return
        await self._drop(session.conn, session.host, session.lease)

    async def _evict_one(self, host: str) -> bool:
        """Close one idle connection of ``host`` (caller holds the host's condition)."""
        for key, conns in self._idle.items():
            for i, item in enumerate(conns):
                if item.host == host:
                    del conns[i]
                    if not conns:
                        del self._idle[key]
                    await item.conn.quit()
                    self._hosts[host].used -= 1
                    await self._free_lease(item.lease)
                    return True
        return False

    async def _drop(self, conn: SmtpConnection, host: str, lease: Lease | None) -> None:
        await conn.quit()
        await self._release_slot(host, lease)

    async def _free_lease(self, lease: Lease | None) -> None:
        if lease is not None and self.leases is not None:
            try:
                await self.leases.release(lease)
            except KvUnavailable:
                pass  # not renewed any more: it expires within its TTL

    async def _release_slot(self, host: str, lease: Lease | None = None) -> None:
        await self._free_lease(lease)
        slot = self._hosts.get(host)
        if slot is None:
            return
        async with slot.changed:
            slot.used = max(0, slot.used - 1)
            slot.changed.notify()

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, max(self.idle_keep_s, 0.1)))
            cutoff = time.monotonic() - self.idle_keep_s
            for key in list(self._idle):
                conns = self._idle.get(key)
                if conns is None:
                    continue
                keep = [c for c in conns if c.since >= cutoff and not c.conn.closed]
                old = [c for c in conns if c not in keep]
                if keep:
                    self._idle[key] = keep
                else:
                    del self._idle[key]
                for item in old:
                    await self._drop(item.conn, item.host, item.lease)
