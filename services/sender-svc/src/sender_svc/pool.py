"""Logged-in SMTP connections kept for the next message of the same login, within host limits.

A host (host:port) has at most the profile's ``max_concurrent_connections`` connections from this
process, idle ones included; when a new login needs a slot on a full host, an idle connection of
that host is closed for it. An idle connection is closed after ``MW_SENDER_IDLE_KEEP_S``. The
bound is per process: replicas each keep their own (JetStream KV leases as tester-svc's
shared_limits are the next step).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from mailwarden_mailnet.smtp import SmtpConnection
from sender_svc import metrics

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


class ConnectionPool:
    def __init__(self, idle_keep_s: float) -> None:
        self.idle_keep_s = idle_keep_s
        self._hosts: dict[str, _Host] = {}
        self._idle: dict[str, list[tuple[SmtpConnection, str, float]]] = {}
        self._reaper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_forever(), name="smtp-pool-reaper")

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for key in list(self._idle):
            for conn, host, _ in self._idle.pop(key):
                await self._drop(conn, host)

    async def acquire(self, key: str, host: str, limit: int, opener: Opener) -> Session:
        """An idle connection of ``key``, else a new one once ``host`` has a free slot."""
        idle = self._idle.get(key)
        while idle:
            conn, conn_host, _ = idle.pop()
            if not conn.closed:
                metrics.CONNECTIONS.labels(how="reused").inc()
                return Session(key, conn_host, conn, reused=True)
            await self._release_slot(conn_host)
        slot = self._hosts.setdefault(host, _Host(limit))
        slot.limit = limit
        async with slot.changed:
            while slot.used >= slot.limit:
                if not await self._evict_one(host):
                    await slot.changed.wait()
            slot.used += 1
        try:
            conn = await opener()
        except BaseException:
            await self._release_slot(host)
            raise
        metrics.CONNECTIONS.labels(how="opened").inc()
        return Session(key, host, conn, reused=False)

    async def release(self, session: Session, keep: bool) -> None:
        """Back to the idle pool (``keep`` and still open), else closed and its slot freed."""
        if keep and not session.conn.closed and self.idle_keep_s > 0:
            self._idle.setdefault(session.key, []).append((session.conn, session.host, time.monotonic()))
            return
        await self._drop(session.conn, session.host)

    async def _evict_one(self, host: str) -> bool:
        """Close one idle connection of ``host`` (caller holds the host's condition)."""
        for key, conns in self._idle.items():
            for i, (conn, conn_host, _) in enumerate(conns):
                if conn_host == host:
                    del conns[i]
                    if not conns:
                        del self._idle[key]
                    await conn.quit()
                    self._hosts[host].used -= 1
                    return True
        return False

    async def _drop(self, conn: SmtpConnection, host: str) -> None:
        await conn.quit()
        await self._release_slot(host)

    async def _release_slot(self, host: str) -> None:
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
                keep = [c for c in conns if c[2] >= cutoff and not c[0].closed]
                old = [c for c in conns if c not in keep]
                if keep:
                    self._idle[key] = keep
                else:
                    del self._idle[key]
                for conn, host, _ in old:
                    await self._drop(conn, host)
