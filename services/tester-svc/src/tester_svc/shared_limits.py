"""The two shared limits on top of :mod:`tester_svc.kv`: host leases and the auth-failure record.

Host leases are :mod:`mailwarden_runtime.hostleases` (shared with sync-svc) in the testers' own
bucket: a lease per test, 15 s TTL by default, renewed while the test runs, so a killed tester's
slots are taken over within one TTL instead of after a whole test deadline (the tests queued for
that host do not spend their own deadlines waiting for a dead process).

Breaker record: one key per (host, user) holds the recent failure times and fingerprints of the
passwords that definitely failed (keyed hashes), so every tester refuses a login that another
tester saw fail. Values carry their own times; bucket TTLs only clean up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from mailwarden_runtime import hostleases
from mailwarden_runtime.hostleases import Lease
from tester_svc.breakerview import BreakerView
from tester_svc.kv import BREAKER_BUCKET, HOSTS_BUCKET, Conflict, KeyHasher, SharedKv

log = logging.getLogger(__name__)

CAS_ATTEMPTS = 5
MAX_FINGERPRINTS = 16


def _jitter() -> float:
    return random.uniform(0.001, 0.01)


def _encode(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


class HostLeases(hostleases.HostLeases):
    """The testers' host leases (:mod:`mailwarden_runtime.hostleases`) in their own bucket."""

    def __init__(
        self,
        kv: SharedKv,
        hasher: KeyHasher,
        ttl_s: float,
        clock: Callable[[], float] = time.time,
        keep_idle_s: float = 0.0,
    ) -> None:
        super().__init__(kv, hasher, ttl_s, HOSTS_BUCKET, clock, keep_idle_s)


__all__ = ["BreakerStore", "BreakerTrip", "FailureRecord", "HostLeases", "Lease", "breaker_trip"]


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
        view: BreakerView | None = None,
    ) -> None:
        """``view``: the watched copy of the bucket, read instead of KV while it is current."""
        self.kv = kv
        self.view = view
        self.hasher = hasher
        self.threshold = threshold
        self.window_s = window_s
        self._clock = clock

    def key(self, host: str, username: str) -> str:
        return self.hasher.digest("user", host.lower(), username)

    def fingerprint(self, host: str, username: str, password: str) -> str:
        return self.hasher.digest("password", host.lower(), username, password)

    async def read(self, host: str, username: str, *, stored: bool = False) -> FailureRecord:
        """No record in the watched copy (nearly every test) is taken from it; a record there, a copy
        not current or ``stored`` reads KV, so a clear another tester made is never missed."""
        key = self.key(host, username)
        seen = self.view.lookup(key) if self.view is not None and not stored else None
        revision, raw = seen if seen is not None and not seen[1] else await self.kv.read(BREAKER_BUCKET, key)
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
            raw = current.encode()
            try:
                written = await self.kv.write(BREAKER_BUCKET, key, raw, record.revision)
                if self.view is not None:
                    self.view.wrote(key, written, raw)
                return
            except Conflict:
                await asyncio.sleep(_jitter())
                record = await self.read(host, username, stored=True)  # the copy was behind

    async def clear(self, host: str, username: str) -> None:
        key = self.key(host, username)
        await self.kv.delete(BREAKER_BUCKET, key)
        if self.view is not None:
            self.view.deleted(key)
