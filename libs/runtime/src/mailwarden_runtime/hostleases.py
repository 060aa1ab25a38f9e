"""Host leases: at most ``limit`` connections to one host across every process of a service.

A host has ``limit`` slot keys in a JetStream KV bucket (:mod:`mailwarden_runtime.sharedkv`); a
process takes a free or expired slot with a compare-and-set write of ``{lease id, until}``, so
across all processes at most ``limit`` leases are live. ``until`` is a short wall-clock deadline
(the TTL) that the holder pushes forward every TTL/3 while it uses the connection (a
compare-and-set on the revision it holds), and a release writes the slot free. A process killed
mid-use stops renewing, so its slots are taken over within one TTL.

Clock skew: ``until`` is written with the holder's clock and compared with the reader's, so a
reader whose clock runs ``s`` seconds ahead sees a lease expire ``s`` seconds early. A renewal
starts TTL/3 after the last write and takes at most one KV deadline (keep that ≤ TTL/3), so a
live lease is rewritten about 2·TTL/3 after its previous write at the latest and stays live for
every reader as long as the skew is below TTL/3. A dead holder's slot frees after TTL ± skew.

If a renewal finds the slot rewritten by another lease (ours had expired: a long pause, a KV
outage longer than the TTL), the holder stops renewing and logs a warning; its use goes on, so
for that moment the host may see one connection more than its limit. If KV does not answer,
renewal tries again at the next tick. Used by tester-svc (one lease per connection) and sync-svc
(one per session).

Kept idle (``keep_idle_s``, tester-svc): a released lease stays this process's, still renewed, for
that long, and the next connection to the same host here takes it without a KV write; only a
lease idle that long is written free. A bulk job's connections then cost no KV write each
(two before: the take and the free). The limit holds as before (an idle lease counts as held);
another process waits at most ``keep_idle_s`` longer for a slot this one stopped using.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from mailwarden_runtime.sharedkv import Conflict, KeyHasher, KvUnavailable, SharedKv

log = logging.getLogger(__name__)

PROBE_BATCH = 8  # slots read at once (in parallel) while looking for a free one
PROBE_SLOTS = 16  # slots looked at per attempt: all of them up to this limit, a random sample above
MAX_FREED = 64


def check_lease_renewal(kv_timeout_s: float, lease_ttl_s: float, kv_setting: str, ttl_setting: str) -> None:
    """The settings rule of the paragraph above: a renewal (every TTL/3, one KV deadline at most)
    lands before the lease ends; raises ``ValueError`` naming the two settings otherwise."""
    if lease_ttl_s < 3 * kv_timeout_s:
        raise ValueError(f"{ttl_setting} must be at least 3 x {kv_setting}")


@dataclass(frozen=True)
class Lease:
    """A slot as taken; ``revision`` is the take's (renewals move on from it, tracked apart)."""

    key: str
    slot: int
    lease_id: str
    revision: int


@dataclass
class _Held:
    """A lease this process holds: the revision of its last write and the task renewing it."""

    lease: Lease
    revision: int
    renewal: asyncio.Task[None] | None = None


FREE = b"{}"


def _held(raw: bytes, now: float) -> bool:
    """Whether a slot's value is a lease that has not expired (unreadable: free, never stuck)."""
    if not raw or raw == FREE:
        return False
    try:
        return float(json.loads(raw)["until"]) > now
    except (ValueError, TypeError, KeyError):
        return False


def _holder(raw: bytes) -> str | None:
    """The lease id written in a slot's value, if any."""
    try:
        held_by = json.loads(raw).get("id") if raw else None
    except (ValueError, AttributeError):
        return None
    return held_by if isinstance(held_by, str) else None


def _encode(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


class HostLeases:
    """At most ``limit`` live leases per host across every process: one KV key per slot.

    A slot is taken by a compare-and-set write on the revision read (free, expired or never
    written), kept by renewals every ``ttl_s / 3`` and released by writing it free again. Keys
    are ``<host hash>.<slot>``, so processes contend per slot, not on one hot key per host. This
    process remembers the slots it freed and their revisions, so on a busy host the next use
    takes one back in a single round trip.
    """

    def __init__(
        self,
        kv: SharedKv,
        hasher: KeyHasher,
        ttl_s: float,
        bucket: str,
        clock: Callable[[], float] = time.time,
        keep_idle_s: float = 0.0,
    ) -> None:
        self.kv = kv
        self.bucket = bucket
        self.hasher = hasher
        self.ttl_s = ttl_s
        self.renew_every_s = ttl_s / 3
        self._clock = clock
        self._freed: dict[str, list[tuple[int, int]]] = {}  # host hash -> [(slot, revision)]
        self._writing: dict[str, str] = {}  # lease id -> slot key of a write in flight
        self._held: dict[str, _Held] = {}  # lease id -> a lease held (and renewed) here
        self.keep_idle_s = keep_idle_s
        self._idle: dict[str, list[tuple[Lease, float]]] = {}  # host hash -> [(held lease, idle since)]
        self._reapers: set[asyncio.Task[None]] = set()

    def key(self, host: str) -> str:
        return self.hasher.digest("host", host.lower())

    def new_id(self) -> str:
        return uuid.uuid4().hex[:16]

    @property
    def renewing(self) -> int:
        """Renewal tasks still running (0 once every lease is released or the leases closed)."""
        return sum(1 for h in self._held.values() if h.renewal is not None and not h.renewal.done())

    def _value(self, lease_id: str) -> bytes:
        return _encode({"id": lease_id, "until": self._clock() + self.ttl_s})

    async def _take(self, host_key: str, slot: int, revision: int, lease_id: str) -> Lease | None:
        key = f"{host_key}.{slot}"
        self._writing[lease_id] = key  # left in place when cancelled mid-write: see abandon()
        try:
            new = await self.kv.write(self.bucket, key, self._value(lease_id), revision)
        except Conflict:
            self._writing.pop(lease_id, None)
            return None
        except KvUnavailable:
            self._writing.pop(lease_id, None)
            raise
        self._writing.pop(lease_id, None)
        lease = Lease(key, slot, lease_id, new)
        held = _Held(lease, new)
        held.renewal = asyncio.create_task(self._renew(held), name=f"host-lease-renewal-{lease_id}")
        self._held[lease_id] = held
        return lease

    async def _renew(self, held: _Held) -> None:
        """Push ``until`` forward every TTL/3 until released, cancelled or taken over."""
        lease = held.lease
        while True:
            await asyncio.sleep(self.renew_every_s)
            try:
                held.revision = await self.kv.write(
                    self.bucket, lease.key, self._value(lease.lease_id), held.revision
                )
                continue
            except KvUnavailable:
                continue  # logged by the KV layer; the next tick tries again
            except Conflict:
                pass
            # Our revision is stale. A renewal whose answer was lost may have landed: still ours?
            try:
                revision, raw = await self.kv.read(self.bucket, lease.key)
            except KvUnavailable:
                continue
            if _holder(raw) == lease.lease_id:
                held.revision = revision  # renewed at the next tick
                continue
            log.warning(
                "host lease expired and taken by another lease before its renewal; renewal stops",
                extra={"slot_key": lease.key, "ttl_s": self.ttl_s},
            )
            return

    async def _stop_renewal(self, lease_id: str) -> int | None:
        """Stop renewing; the revision of our last known write (None: not held here)."""
        held = self._held.pop(lease_id, None)
        if held is None:
            return None
        task = held.renewal
        if task is not None and not task.done():
            task.cancel()
            # Wait for the task to end (a write it had in flight is then settled), but a cancel
            # of the caller stays the caller's, not swallowed here.
            await asyncio.wait([task])
        return held.revision

    async def try_acquire(self, host: str, limit: int, lease_id: str) -> Lease | None:
        """A lease (renewed from now on, until released), or None when the slots looked at are
        all held by live leases."""
        host_key = self.key(host)
        idle = self._idle.get(host_key, [])
        while idle:
            kept, _ = idle.pop()  # the most recently used: the others age out
            if not self._renewed(kept):
                continue  # taken over by another lease: no longer ours
            if kept.slot < limit:
                return kept
            await self._release_now(kept)  # the limit went down
        freed = self._freed.get(host_key, [])
        while freed:
            slot, revision = freed.pop()
            if slot < limit and (lease := await self._take(host_key, slot, revision, lease_id)):
                return lease
        order = random.sample(range(limit), min(limit, PROBE_SLOTS))
        for start in range(0, len(order), PROBE_BATCH):
            batch = order[start : start + PROBE_BATCH]
            reads = await asyncio.gather(
                *(self.kv.read(self.bucket, f"{host_key}.{i}") for i in batch), return_exceptions=True
            )
            now = self._clock()
            for slot, result in zip(batch, reads, strict=True):
                if isinstance(result, BaseException):
                    raise result
                revision, raw = result
                if not _held(raw, now) and (lease := await self._take(host_key, slot, revision, lease_id)):
                    return lease
        return None

    def _renewed(self, lease: Lease) -> bool:
        held = self._held.get(lease.lease_id)
        return held is not None and held.renewal is not None and not held.renewal.done()

    async def release(self, lease: Lease) -> None:
        """Free the slot (see :meth:`_release_now`), or keep it idle for the next use here."""
        if self.keep_idle_s > 0 and self._renewed(lease):
            self._idle.setdefault(lease.key.rsplit(".", 1)[0], []).append((lease, time.monotonic()))
            if all(task.done() for task in self._reapers):
                self._reap()
            return
        await self._release_now(lease)

    def stop_keeping(self) -> None:
        """Keep no lease idle from now on and free those that are (the process is stopping)."""
        self.keep_idle_s = 0.0
        if any(self._idle.values()):
            self._reap()

    def _reap(self) -> None:
        task = asyncio.create_task(self._free_idle(), name="host-lease-idle-reaper")
        self._reapers.add(task)
        task.add_done_callback(self._reapers.discard)

    async def _free_idle(self) -> None:
        """Free the leases idle for ``keep_idle_s``, until none is idle."""
        while any(self._idle.values()):
            await asyncio.sleep(self.keep_idle_s / 2)
            cutoff = time.monotonic() - self.keep_idle_s
            expired: list[Lease] = []
            for idle in self._idle.values():
                expired += [lease for lease, since in idle if since <= cutoff]
                idle[:] = [(lease, since) for lease, since in idle if since > cutoff]
            for lease in expired:
                with contextlib.suppress(KvUnavailable):  # logged by the KV layer; expires in one TTL
                    await self._release_now(lease)

    async def _release_now(self, lease: Lease) -> None:
        """Stop renewing and free the slot, unless our lease expired and another took it since."""
        revision = await self._stop_renewal(lease.lease_id)
        new = await self._free(lease.key, lease.lease_id, lease.revision if revision is None else revision)
        if new is None:
            return
        freed = self._freed.setdefault(lease.key.rsplit(".", 1)[0], [])
        if len(freed) < MAX_FREED:
            freed.append((lease.slot, new))

    async def _free(self, key: str, lease_id: str, revision: int) -> int | None:
        """Write the slot free on ``revision``, or on the one read if it still holds our lease.

        The second try covers a renewal cancelled after its write landed; the new revision, or
        None when the slot is another lease's.
        """
        try:
            return await self.kv.write(self.bucket, key, FREE, revision)
        except Conflict:
            pass
        revision, raw = await self.kv.read(self.bucket, key)
        if _holder(raw) != lease_id:
            return None
        try:
            return await self.kv.write(self.bucket, key, FREE, revision)
        except Conflict:
            return None

    async def abandon(self, lease_id: str) -> None:
        """After a cancel mid-write: free the slot if the write landed."""
        key = self._writing.pop(lease_id, None)
        if key is None:
            return
        revision, raw = await self.kv.read(self.bucket, key)
        if _holder(raw) == lease_id:
            with contextlib.suppress(Conflict):
                await self.kv.write(self.bucket, key, FREE, revision)

    async def close(self) -> None:
        """Free the idle leases, stop every renewal without releasing (at shutdown, after the
        tests drained): the leases still held expire within one TTL."""
        for task in list(self._reapers):
            task.cancel()
        if self._reapers:
            await asyncio.wait(list(self._reapers))
        idle = [lease for held in self._idle.values() for lease, _ in held]
        self._idle.clear()
        for lease in idle:
            with contextlib.suppress(KvUnavailable):
                await self._release_now(lease)
        for lease_id in list(self._held):
            await self._stop_renewal(lease_id)
