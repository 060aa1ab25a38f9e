"""Bounded concurrency (global and per target host) and the auth-failure breaker.

Both live in this process's memory for now: with several testers each enforces its share.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class _HostSlot:
    limit: int
    semaphore: asyncio.Semaphore
    users: int = 0


class ConnectionLimiter:
    """At most ``global_limit`` connections overall and the target's own maximum per host."""

    def __init__(self, global_limit: int) -> None:
        self._global = asyncio.Semaphore(global_limit)
        self._hosts: dict[str, _HostSlot] = {}

    @asynccontextmanager
    async def slot(self, host: str, per_host: int) -> AsyncIterator[None]:
        key = host.lower()
        entry = self._hosts.get(key)
        if entry is None or (entry.users == 0 and entry.limit != per_host):
            entry = _HostSlot(per_host, asyncio.Semaphore(per_host))
            self._hosts[key] = entry
        entry.users += 1
        try:
            # Host first: waiting for a busy host must not hold a global slot others could use.
            async with entry.semaphore, self._global:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0 and self._hosts.get(key) is entry:
                del self._hosts[key]  # no idle entries: the map stays as small as the work


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
        entry = self._entry(host, username)
        if entry is None:
            return False
        return len(entry.times) >= self.threshold or self._fingerprint(password) in entry.fingerprints

    def record_failure(self, host: str, username: str, password: str) -> None:
        now = self._now()
        entry = self._entries.setdefault((host.lower(), username), _Failures())
        entry.times.append(now)
        entry.fingerprints[self._fingerprint(password)] = now

    def record_success(self, host: str, username: str) -> None:
        self._entries.pop((host.lower(), username), None)
