"""The two shared limits on top of :mod:`tester_svc.kv`: host leases and the auth-failure record.

Host leases: a host has ``limit`` slot keys; a tester takes a free or expired slot with a
compare-and-set write of ``{lease id, deadline}``, so across all testers at most ``limit`` leases
are live. Deadlines are wall-clock times that outlive the test deadline: a slot left by a tester
killed mid-test is taken over by the next tester once its deadline has passed.

Breaker record: one key per (host, user) holds the recent failure times and fingerprints of the
passwords that definitely failed (keyed hashes), so every tester refuses a login that another
tester saw fail. Values carry their own times; bucket TTLs only clean up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from tester_svc.kv import BREAKER_BUCKET, HOSTS_BUCKET, Conflict, KeyHasher, KvUnavailable, SharedKv

CAS_ATTEMPTS = 5
MAX_FINGERPRINTS = 16
PROBE_BATCH = 8  # slots read at once (in parallel) while looking for a free one
PROBE_SLOTS = 16  # slots looked at per attempt: all of them up to this limit, a random sample above
MAX_FREED = 64


def _jitter() -> float:
    return random.uniform(0.001, 0.01)


@dataclass(frozen=True)
class Lease:
    key: str
    slot: int
    lease_id: str
    revision: int


FREE = b"{}"


def _held(raw: bytes, now: float) -> bool:
    """Whether a slot's value is a lease that has not expired (unreadable: free, never stuck)."""
    if not raw or raw == FREE:
        return False
    try:
        return float(json.loads(raw)["until"]) > now
    except (ValueError, TypeError, KeyError):
        return False


def _encode(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


class HostLeases:
    """At most ``limit`` live leases per host across every tester: one KV key per slot.

    A slot is taken by a compare-and-set write on the revision read (free, expired or never
    written), released by writing it free again. Keys are ``<host hash>.<slot>``, so testers
    contend per slot, not on one hot key per host. This process remembers the slots it freed and
    their revisions, so on a busy host the next test takes one back in a single round trip.
    """

    def __init__(
        self, kv: SharedKv, hasher: KeyHasher, lease_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.kv = kv
        self.hasher = hasher
        self.lease_s = lease_s
        self._clock = clock
        self._freed: dict[str, list[tuple[int, int]]] = {}  # host hash -> [(slot, revision)]
        self._writing: dict[str, str] = {}  # lease id -> slot key of a write in flight

    def key(self, host: str) -> str:
        return self.hasher.digest("host", host.lower())

    def new_id(self) -> str:
        return uuid.uuid4().hex[:16]

    async def _take(self, host_key: str, slot: int, revision: int, lease_id: str) -> Lease | None:
        key = f"{host_key}.{slot}"
        value = _encode({"id": lease_id, "until": self._clock() + self.lease_s})
        self._writing[lease_id] = key  # left in place when cancelled mid-write: see abandon()
        try:
            new = await self.kv.write(HOSTS_BUCKET, key, value, revision)
        except Conflict:
            self._writing.pop(lease_id, None)
            return None
        except KvUnavailable:
            self._writing.pop(lease_id, None)
            raise
        self._writing.pop(lease_id, None)
        return Lease(key, slot, lease_id, new)

    async def try_acquire(self, host: str, limit: int, lease_id: str) -> Lease | None:
        """A lease, or None when the slots looked at are all held by live leases."""
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
        """Free the slot, unless our lease expired and another tester has taken it since."""
        try:
            new = await self.kv.write(HOSTS_BUCKET, lease.key, FREE, lease.revision)
        except Conflict:
            return
        freed = self._freed.setdefault(lease.key.rsplit(".", 1)[0], [])
        if len(freed) < MAX_FREED:
            freed.append((lease.slot, new))

    async def abandon(self, lease_id: str) -> None:
        """After a cancel mid-write: free the slot if the write landed."""
        key = self._writing.pop(lease_id, None)
        if key is None:
            return
        revision, raw = await self.kv.read(HOSTS_BUCKET, key)
        try:
            held_by = json.loads(raw).get("id") if raw else None
        except (ValueError, AttributeError):
            return
        if held_by == lease_id:
            with contextlib.suppress(Conflict):
                await self.kv.write(HOSTS_BUCKET, key, FREE, revision)


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
        return len(record.times) >= self.threshold or fingerprint in record.prints

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
