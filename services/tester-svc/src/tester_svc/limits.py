"""Bounded concurrency (global and per target host) and the auth-failure breaker.

Each limit has a local part, in this process's memory, and a shared part in JetStream KV
(:mod:`tester_svc.shared_limits`) that makes it hold across every tester process. The local
part is always enforced: the per-host semaphore is a fast gate in front of the shared lease
(no KV round trip for a test that could not get a slot in this process anyway), and every auth
failure is also recorded locally.

Stopping: once :meth:`ConnectionLimiter.drain` is called, every wait for a slot (host, shared
lease, global) gives up with :class:`~tester_svc.errors.Draining`, so a test that has no slot
yet goes back to the queue at once; tests that hold a slot are not affected.

When KV does not answer, a test goes on under the local limits alone, with a warning log, the
``mailwarden_tester_shared_limits_degraded`` gauge and a ``limits: local`` fact on its steps.
Denying instead would record an infrastructure outage as a failure in every mailbox's history
(and alert owners about servers that are fine); the local limits still bound each process, so
the worst case is the pre-sharing one, N testers times the limit, for the length of the outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from tester_svc import metrics
from tester_svc.errors import Draining
from tester_svc.kv import KvUnavailable
from tester_svc.shared_limits import (
    BreakerStore,
    BreakerTrip,
    FailureRecord,
    HostLeases,
    Lease,
    breaker_trip,
)

Scope = Literal["shared", "local"]
T = TypeVar("T")
WAIT_FIRST_S = 0.02  # first pause while a host is full everywhere; doubles up to WAIT_MAX_S
WAIT_MAX_S = 0.5


@dataclass
class _HostSlot:
    limit: int
    semaphore: asyncio.Semaphore
    users: int = 0


@dataclass(frozen=True)
class SlotInfo:
    """How the slot was granted: under the shared lease or the local limits only."""

    scope: Scope
    waited_s: float


class ConnectionLimiter:
    """At most ``global_limit`` connections overall and the target's own maximum per host.

    With ``leases``, the per-host maximum holds across every tester: after the local gate, a
    test takes a process-wide permit and tries for a shared lease; while the host is full
    everywhere it waits without the permit (bounded by its own deadline, with growing jittered
    pauses between tries). Only tests that hold a permit hold a lease.
    """

    def __init__(self, global_limit: int, leases: HostLeases | None = None) -> None:
        self._global = asyncio.Semaphore(global_limit)
        self._hosts: dict[str, _HostSlot] = {}
        self._leases = leases
        self._background: set[asyncio.Task[None]] = set()
        self.draining = asyncio.Event()

    def drain(self) -> None:
        """The process is stopping: grant no more slots; tests waiting for one raise ``Draining``;
        leases are freed when their test ends, not kept idle (other testers take them now)."""
        self.draining.set()
        if self._leases is not None:
            self._leases.stop_keeping()

    @asynccontextmanager
    async def slot(self, host: str, per_host: int) -> AsyncIterator[SlotInfo]:
        key = host.lower()
        entry = self._hosts.get(key)
        if entry is None or (entry.users == 0 and entry.limit != per_host):
            entry = _HostSlot(per_host, asyncio.Semaphore(per_host))
            self._hosts[key] = entry
        entry.users += 1
        try:
            # Host first (a process-local gate: a busy host's queue holds nothing others use).
            await self._acquire(entry.semaphore)
            try:
                info, lease = await self._permit_and_lease(key, per_host)
                try:
                    yield info
                finally:
                    if lease is None:
                        self._global.release()
                    else:
                        await self._release(lease)  # gives the permit back once the lease is settled
            finally:
                entry.semaphore.release()
        finally:
            entry.users -= 1
            if entry.users == 0 and self._hosts.get(key) is entry:
                del self._hosts[key]  # no idle entries: the map stays as small as the work

    async def _acquire(self, semaphore: asyncio.Semaphore) -> None:
        """Take a permit, or raise ``Draining`` if the process starts stopping first.

        A permit granted at the same moment as the drain is kept (the test runs); one granted
        after this wait gave up, or was cancelled, is released: no permit ever leaks.
        """
        if self.draining.is_set():
            raise Draining
        if not semaphore.locked():
            await semaphore.acquire()  # free: returns without suspending
            return
        acquire = asyncio.ensure_future(semaphore.acquire())
        stop = asyncio.ensure_future(self.draining.wait())
        try:
            await asyncio.wait((acquire, stop), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            _give_back(acquire, semaphore)  # cancelled from outside while waiting
            raise
        finally:
            stop.cancel()
        if acquire.done() and not acquire.cancelled() and acquire.exception() is None:
            return
        _give_back(acquire, semaphore)
        raise Draining

    async def _permit_and_lease(self, host: str, limit: int) -> tuple[SlotInfo, Lease | None]:
        """The process-wide permit, then the shared lease: returns holding the permit (and the lease).

        The lease is only *tried* while the permit is held, never waited for: when the host is full
        everywhere the permit goes back, and the test pauses (growing, jittered, ended early by the
        drain, bounded by the test's deadline, which cancels it) before it takes a permit and tries
        again. So a test that waits for a full host holds no permit that other hosts' tests could
        use, and a test that waits for a permit holds no lease: this tester's leases of a host never
        outnumber the connections it can open (reliability finding 14). ``waited_s`` runs from the
        first try to the lease.
        """
        if self._leases is None:
            await self._acquire(self._global)
            return SlotInfo("local", 0.0), None
        lease_id = self._leases.new_id()
        started: float | None = None
        pause = WAIT_FIRST_S
        try:
            while True:
                await self._acquire(self._global)  # raises Draining once the drain started
                if started is None:
                    started = time.monotonic()
                try:
                    lease = await self._leases.try_acquire(host, limit, lease_id)
                except KvUnavailable:
                    metrics.LIMIT_FALLBACKS.labels(limit="host").inc()
                    return SlotInfo("local", time.monotonic() - started), None
                except BaseException:
                    self._global.release()
                    raise
                if lease is not None:
                    waited = time.monotonic() - started
                    metrics.HOST_SLOT_WAIT.observe(waited)
                    return SlotInfo("shared", waited), lease
                self._global.release()  # the host is full everywhere: wait without the permit
                with contextlib.suppress(TimeoutError):
                    # A pause that the drain ends early (the next _acquire then raises Draining).
                    await asyncio.wait_for(self.draining.wait(), random.uniform(pause / 2, pause))
                pause = min(pause * 2, WAIT_MAX_S)
        except asyncio.CancelledError:
            # Out of time: a write in flight may have landed before the cancel.
            self._in_background(self._quietly(self._leases.abandon(lease_id)))
            raise

    async def _release(self, lease: Lease) -> None:
        """Release the lease, then the permit, even when the test is being cancelled: the release
        runs to its end regardless, and the permit comes back only after it (a lease kept idle is
        this tester's next one before the permit lets another test try a new one)."""
        assert self._leases is not None
        task = self._in_background(self._quietly(self._leases.release(lease)))
        task.add_done_callback(lambda _: self._global.release())
        await asyncio.shield(task)

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    @staticmethod
    async def _quietly(release: Coroutine[Any, Any, None]) -> None:
        try:
            await release
        except KvUnavailable:
            pass  # logged by the KV layer; no longer renewed, the lease expires within its TTL


def _give_back(acquire: asyncio.Future[T], semaphore: asyncio.Semaphore) -> None:
    """Stop a semaphore wait this caller no longer wants; release the permit if it was granted anyway."""

    def release_if_granted(done: asyncio.Future[T]) -> None:
        if not done.cancelled() and done.exception() is None:
            semaphore.release()

    if not acquire.done():
        acquire.cancel()  # Semaphore.acquire undoes a grant that raced with this cancel
    acquire.add_done_callback(release_if_granted)


@dataclass
class _Failures:
    times: deque[float] = field(default_factory=deque)
    fingerprints: dict[bytes, float] = field(default_factory=dict)


class AuthBreaker:
    """Pauses logins per (host, username) after definite auth failures.

    The same credentials that definitely failed are never retried within the window (so a
    redelivered or repeated test cannot lock the account); after ``threshold`` failures with any
    password, every login for that user on that host pauses until the window has passed. The
    password is remembered only as an HMAC under a per-process random key.
    """

    def __init__(self, threshold: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.window_s = window_s
        self._clock = clock
        self._key = os.urandom(32)
        self._entries: dict[tuple[str, str], _Failures] = {}

    def _now(self) -> float:
        return self._clock()

    def _fingerprint(self, password: str) -> bytes:
        return hmac.new(self._key, password.encode(), hashlib.sha256).digest()

    def _entry(self, host: str, username: str) -> _Failures | None:
        key = (host.lower(), username)
        entry = self._entries.get(key)
        if entry is None:
            return None
        cutoff = self._now() - self.window_s
        while entry.times and entry.times[0] < cutoff:
            entry.times.popleft()
        entry.fingerprints = {fp: t for fp, t in entry.fingerprints.items() if t >= cutoff}
        if not entry.times and not entry.fingerprints:
            del self._entries[key]
            return None
        return entry

    def is_open(self, host: str, username: str, password: str) -> bool:
        return self.trip(host, username, password) is not None

    def trip(self, host: str, username: str, password: str) -> BreakerTrip | None:
        """Why logins are paused (which failure, until when), or None when they are not."""
        entry = self._entry(host, username)
        if entry is None:
            return None
        prints = {fp.hex(): t for fp, t in entry.fingerprints.items()}
        epoch = time.time() - self._now()
        fingerprint = self._fingerprint(password).hex()
        return breaker_trip(list(entry.times), prints, fingerprint, self.threshold, self.window_s, epoch)

    def record_failure(self, host: str, username: str, password: str) -> None:
        now = self._now()
        entry = self._entries.setdefault((host.lower(), username), _Failures())
        entry.times.append(now)
        entry.fingerprints[self._fingerprint(password)] = now

    def record_success(self, host: str, username: str) -> None:
        self._entries.pop((host.lower(), username), None)


@dataclass(frozen=True)
class BreakerTicket:
    """What the check saw, handed back with the outcome (saves a KV read per test)."""

    host: str
    username: str
    scope: Scope
    record: FailureRecord | None = None
    fingerprint: str = ""
    trip: BreakerTrip | None = None


class LoginBreaker:
    """The breaker a test consults: the shared record when KV answers, the local one otherwise.

    The shared record decides while it is available (a success seen by any tester clears it);
    failures are always recorded locally too, so the local breaker is current for a fallback.
    """

    def __init__(self, local: AuthBreaker, store: BreakerStore | None = None) -> None:
        self.local = local
        self.store = store

    async def check(self, host: str, username: str, password: str) -> tuple[bool, BreakerTicket]:
        """``(open, ticket)``: open means do not even connect."""
        if self.store is not None:
            fingerprint = self.store.fingerprint(host, username, password)
            try:
                record = await self.store.read(host, username)
            except KvUnavailable:
                metrics.LIMIT_FALLBACKS.labels(limit="breaker").inc()
            else:
                trip = self.store.trip(record, fingerprint)
                return trip is not None, BreakerTicket(host, username, "shared", record, fingerprint, trip)
        trip = self.local.trip(host, username, password)
        return trip is not None, BreakerTicket(host, username, "local", trip=trip)

    async def record_failure(self, ticket: BreakerTicket, password: str) -> None:
        self.local.record_failure(ticket.host, ticket.username, password)
        if self.store is None:
            return
        fingerprint = ticket.fingerprint or self.store.fingerprint(ticket.host, ticket.username, password)
        try:
            await self.store.add_failure(
                ticket.host, ticket.username, fingerprint, ticket.record or FailureRecord()
            )
        except KvUnavailable:
            pass  # logged by the KV layer; the local record holds for this process

    async def record_success(self, ticket: BreakerTicket) -> None:
        self.local.record_success(ticket.host, ticket.username)
        if self.store is None or (ticket.record is not None and ticket.record.empty):
            return  # nothing recorded: no round trip
        try:
            await self.store.clear(ticket.host, ticket.username)
        except KvUnavailable:
            pass
