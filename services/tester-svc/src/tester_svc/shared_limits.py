"""The two shared limits on top of :mod:`tester_svc.kv`: host leases and the auth-failure record.

Host leases: one key per target host holds ``{lease id: deadline}``; a tester takes a slot by
writing the live leases plus its own with the revision it read (compare-and-set), so across all
testers at most ``limit`` leases are live. Deadlines are wall-clock times that outlive the test
deadline: a tester killed mid-test leaves a lease that the next writer drops once it has expired.

Breaker record: one key per (host, user) holds the recent failure times and fingerprints of the
passwords that definitely failed (keyed hashes), so every tester refuses a login that another
tester saw fail. Values carry their own times; bucket TTLs only clean up.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from tester_svc.kv import BREAKER_BUCKET, HOSTS_BUCKET, Conflict, KeyHasher, SharedKv

CAS_ATTEMPTS = 5
MAX_FINGERPRINTS = 16


def _jitter() -> float:
    return random.uniform(0.001, 0.01)


@dataclass(frozen=True)
class Lease:
    key: str
    lease_id: str
    revision: int
    written: dict[str, float]


def _decode_leases(raw: bytes) -> dict[str, float]:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
        return {str(k): float(v) for k, v in data.items()}
    except (ValueError, TypeError, AttributeError):
        return {}  # unreadable: treat as free rather than blocking the host for ever


def _encode(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


class HostLeases:
    """At most ``limit`` live leases per host across every tester."""

    def __init__(
        self, kv: SharedKv, hasher: KeyHasher, lease_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.kv = kv
        self.hasher = hasher
        self.lease_s = lease_s
        self._clock = clock

    def key(self, host: str) -> str:
        return self.hasher.digest("host", host.lower())

    def new_id(self) -> str:
        return uuid.uuid4().hex[:16]

    async def try_acquire(self, host: str, limit: int, lease_id: str) -> Lease | None:
        """A lease, or None while the host is full (or too contended right now)."""
        key = self.key(host)
        for _ in range(CAS_ATTEMPTS):
            revision, raw = await self.kv.read(HOSTS_BUCKET, key)
            now = self._clock()
            live = {i: d for i, d in _decode_leases(raw).items() if d > now and i != lease_id}
            if len(live) >= limit:
                return None
            live[lease_id] = now + self.lease_s
            try:
                new = await self.kv.write(HOSTS_BUCKET, key, _encode(live), revision)
            except Conflict:
                await asyncio.sleep(_jitter())
                continue
            return Lease(key, lease_id, new, live)
        return None

    async def release(self, host: str, lease_id: str, lease: Lease | None = None) -> None:
        """Drop the lease; the first try writes on top of our own write (one round trip)."""
        key = self.key(host)
        revision, leases = (lease.revision, lease.written) if lease else (-1, {})
        for _ in range(CAS_ATTEMPTS):
            if revision < 0:
                revision, raw = await self.kv.read(HOSTS_BUCKET, key)
                leases = _decode_leases(raw)
            if lease_id not in leases:
                return
            now = self._clock()
            rest = {i: d for i, d in leases.items() if d > now and i != lease_id}
            try:
                await self.kv.write(HOSTS_BUCKET, key, _encode(rest), revision)
                return
            except Conflict:
                revision = -1
        # Still contended: the lease frees itself at its deadline.


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
