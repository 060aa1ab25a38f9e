"""The two shared limits on top of :mod:`tester_svc.kv`: host leases and the auth-failure record.

Host leases: a host has ``limit`` slot keys; a tester takes a free or expired slot with a
compare-and-set write of ``{lease id, until}``, so across all testers at most ``limit`` leases
are live. ``until`` is a short wall-clock deadline (the TTL, 15 s by default) that the holder
pushes forward every TTL/3 while its test runs (a compare-and-set on the revision it holds), and
a release writes the slot free. A tester killed mid-test stops renewing, so its slots are taken
over within one TTL instead of after a whole test deadline: the tests queued for that host do
not spend their own deadlines waiting for a dead process.

Clock skew: ``until`` is written with the holder's clock and compared with the reader's, so a
reader whose clock runs ``s`` seconds ahead sees a lease expire ``s`` seconds early. A renewal
starts TTL/3 after the last write and takes at most one KV deadline (the settings keep that
≤ TTL/3), so a live lease is rewritten about 2·TTL/3 after its previous write at the latest and
stays live for every reader as long as the skew is below TTL/3 (5 s at the default; we assume
NTP keeps testers within 1 or 2 s). A dead holder's slot frees after TTL ± skew.

If a renewal finds the slot rewritten by another lease (ours had expired: a long pause, a KV
outage longer than the TTL), the holder stops renewing and logs a warning; its test goes on,
so for that moment the host may see one connection more than its limit. If KV does not answer,
renewal tries again at the next tick.

Breaker record: one key per (host, user) holds the recent failure times and fingerprints of the
passwords that definitely failed (keyed hashes), so every tester refuses a login that another
tester saw fail. Values carry their own times; bucket TTLs only clean up.
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from tester_svc.kv import BREAKER_BUCKET, HOSTS_BUCKET, Conflict, KeyHasher, KvUnavailable, SharedKv

log = logging.getLogger(__name__)

CAS_ATTEMPTS = 5
MAX_FINGERPRINTS = 16
PROBE_BATCH = 8  # slots read at once (in parallel) while looking for a free one
PROBE_SLOTS = 16  # slots looked at per attempt: all of them up to this limit, a random sample above
MAX_FREED = 64


def _jitter() -> float:
    return random.uniform(0.001, 0.01)


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
    """At most ``limit`` live leases per host across every tester: one KV key per slot.

    A slot is taken by a compare-and-set write on the revision read (free, expired or never
    written), kept by renewals every ``ttl_s / 3`` and released by writing it free again. Keys
    are ``<host hash>.<slot>``, so testers contend per slot, not on one hot key per host. This
    process remembers the slots it freed and their revisions, so on a busy host the next test
    takes one back in a single round trip.
    """

    def __init__(
        self, kv: SharedKv, hasher: KeyHasher, ttl_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.kv = kv
        self.hasher = hasher
        self.ttl_s = ttl_s
        self.renew_every_s = ttl_s / 3
        self._clock = clock
        self._freed: dict[str, list[tuple[int, int]]] = {}  # host hash -> [(slot, revision)]
        self._writing: dict[str, str] = {}  # lease id -> slot key of a write in flight
        self._held: dict[str, _Held] = {}  # lease id -> a lease held (and renewed) here

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
            new = await self.kv.write(HOSTS_BUCKET, key, self._value(lease_id), revision)
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
                    HOSTS_BUCKET, lease.key, self._value(lease.lease_id), held.revision
                )
                continue
            except KvUnavailable:
                continue  # logged by the KV layer; the next tick tries again
            except Conflict:
                pass
            # Our revision is stale. A renewal whose answer was lost may have landed: still ours?
            try:
                revision, raw = await self.kv.read(HOSTS_BUCKET, lease.key)
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
        freed = self._freed.get(host_key, [])
        while freed:
            slot, revision = freed.pop()
            if slot < limit and (lease := await self._take(host_key, slot, revision, lease_id)):
                return lease
        order = random.sample(range(limit), min(limit, PROBE_SLOTS))
        for start in range(0, len(order), PROBE_BATCH):
            batch = order[start : start + PROBE_BATCH]
            reads = await asyncio.gather(
                *(self.kv.read(HOSTS_BUCKET, f"{host_key}.{i}") for i in batch), return_exceptions=True
            )
            now = self._clock()
            for slot, result in zip(batch, reads, strict=True):
                if isinstance(result, BaseException):
                    raise result
                revision, raw = result
                if not _held(raw, now) and (lease := await self._take(host_key, slot, revision, lease_id)):
                    return lease
        return None

    async def release(self, lease: Lease) -> None:
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
            return await self.kv.write(HOSTS_BUCKET, key, FREE, revision)
        except Conflict:
            pass
        revision, raw = await self.kv.read(HOSTS_BUCKET, key)
        if _holder(raw) != lease_id:
            return None
        try:
            return await self.kv.write(HOSTS_BUCKET, key, FREE, revision)
        except Conflict:
            return None

    async def abandon(self, lease_id: str) -> None:
        """After a cancel mid-write: free the slot if the write landed."""
        key = self._writing.pop(lease_id, None)
        if key is None:
            return
        revision, raw = await self.kv.read(HOSTS_BUCKET, key)
        if _holder(raw) == lease_id:
            with contextlib.suppress(Conflict):
                await self.kv.write(HOSTS_BUCKET, key, FREE, revision)

    async def close(self) -> None:
        """Stop every renewal without releasing (at shutdown, after the tests drained): the
        leases still held expire within one TTL."""
        for lease_id in list(self._held):
            await self._stop_renewal(lease_id)


@dataclass
class FailureRecord:
    """The shared view of one (host, user); ``revision`` 0 means nothing is recorded."""

    revision: int = 0
    times: list[float] = field(default_factory=list)
    prints: dict[str, float] = field(default_factory=dict)

    @classmethod
    def decode(cls, revision: int, raw: bytes) -> FailureRecord:
        if not raw:
            return cls(revision)
        try:
            data = json.loads(raw)
            times = [float(t) for t in data.get("t", [])]
            prints = {str(k): float(v) for k, v in data.get("p", {}).items()}
        except (ValueError, TypeError, AttributeError):
            return cls(revision)
        return cls(revision, times, prints)

    def pruned(self, cutoff: float) -> FailureRecord:
        return FailureRecord(
            self.revision,
            [t for t in self.times if t >= cutoff],
            {p: t for p, t in self.prints.items() if t >= cutoff},
        )

    @property
    def empty(self) -> bool:
        return not self.times and not self.prints

    def encode(self) -> bytes:
        return _encode({"t": self.times, "p": self.prints})


@dataclass(frozen=True)
class BreakerTrip:
    """Why logins of one (host, user) are paused, so a result can say it plainly.

    ``same_password``: this very password was refused at ``failed_at`` (by an earlier test, of this
    mailbox or another with the same login). ``repeated_failures``: ``failures`` definite failures
    with any password, the latest at ``failed_at``. Logins resume at ``resume_at``.
    """

    reason: Literal["same_password", "repeated_failures"]
    failed_at: datetime
    resume_at: datetime
    failures: int

    def detail(self) -> str:
        when, resume = _hms(self.failed_at), _hms(self.resume_at)
        if self.reason == "same_password":
            return (
                f"not tried: the server refused this user's same password at {when} (an earlier test of this"
                f" or another mailbox with the same login); logins with it resume at {resume}"
            )
        return (
            f"not tried: {self.failures} definite login failures of this user on this server, the latest at"
            f" {when}; logins resume at {resume}"
        )

    def facts(self) -> dict[str, str | int]:
        return {
            "paused_by": self.reason,
            "failed_at": self.failed_at.isoformat(),
            "resume_at": self.resume_at.isoformat(),
            "failures": self.failures,
        }


def _hms(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def breaker_trip(
    times: list[float],
    prints: dict[str, float],
    fingerprint: str,
    threshold: int,
    window_s: float,
    epoch: float,
) -> BreakerTrip | None:
    """The trip, if any, from failure times (``epoch`` = the wall-clock time of clock value 0)."""

    def wall(t: float) -> datetime:
        return datetime.fromtimestamp(epoch + t, UTC)

    times = sorted(times)
    if len(times) >= threshold:
        return BreakerTrip(
            "repeated_failures", wall(times[-1]), wall(times[-threshold] + window_s), len(times)
        )
    if fingerprint in prints:
        failed = prints[fingerprint]
        return BreakerTrip("same_password", wall(failed), wall(failed + window_s), len(times))
    return None


class BreakerStore:
    """Definite auth failures per (host, user), shared by every tester."""

    def __init__(
        self,
        kv: SharedKv,
        hasher: KeyHasher,
        threshold: int,
        window_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kv = kv
        self.hasher = hasher
        self.threshold = threshold
        self.window_s = window_s
        self._clock = clock

    def key(self, host: str, username: str) -> str:
        return self.hasher.digest("user", host.lower(), username)

    def fingerprint(self, host: str, username: str, password: str) -> str:
        return self.hasher.digest("password", host.lower(), username, password)

    async def read(self, host: str, username: str) -> FailureRecord:
        revision, raw = await self.kv.read(BREAKER_BUCKET, self.key(host, username))
        return FailureRecord.decode(revision, raw).pruned(self._clock() - self.window_s)

    def is_open(self, record: FailureRecord, fingerprint: str) -> bool:
        return self.trip(record, fingerprint) is not None

    def trip(self, record: FailureRecord, fingerprint: str) -> BreakerTrip | None:
        epoch = time.time() - self._clock()  # 0 with the real clock (wall time)
        return breaker_trip(record.times, record.prints, fingerprint, self.threshold, self.window_s, epoch)

    async def add_failure(self, host: str, username: str, fingerprint: str, seen: FailureRecord) -> None:
        """Append one failure; ``seen`` (read before the login) saves a read when nobody wrote since."""
        key = self.key(host, username)
        record = seen
        for _ in range(CAS_ATTEMPTS):
            now = self._clock()
            current = record.pruned(now - self.window_s)
            current.times = [*current.times, now][-self.threshold :]
            prints = {**current.prints, fingerprint: now}
            current.prints = dict(sorted(prints.items(), key=lambda kv: kv[1])[-MAX_FINGERPRINTS:])
            try:
                await self.kv.write(BREAKER_BUCKET, key, current.encode(), record.revision)
                return
            except Conflict:
                await asyncio.sleep(_jitter())
                record = await self.read(host, username)

    async def clear(self, host: str, username: str) -> None:
        await self.kv.delete(BREAKER_BUCKET, self.key(host, username))
