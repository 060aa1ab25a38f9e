"""A token bucket per key shared by every replica, in JetStream KV (compare-and-set).

Providers throttle per account, not per process: N replicas with a local bucket each would let a
mailbox send N times its rate. One key per bucket holds ``{tokens, at}`` (wall-clock seconds);
taking a token reads it, refills for the time since ``at``, and writes it back on the revision
read; a lost compare-and-set (another replica took one meanwhile) reads again. Keys are hashed
(:class:`~mailwarden_runtime.sharedkv.KeyHasher`). KV not answering raises
:class:`~mailwarden_runtime.sharedkv.KvUnavailable`: callers fall back to their local bucket.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from mailwarden_runtime.sharedkv import Conflict, KeyHasher, KvUnavailable, SharedKv

CAS_ATTEMPTS = 8


class SharedRate:
    """``per_minute`` with bursts of ``burst`` per key, across every replica."""

    def __init__(
        self,
        kv: SharedKv,
        hasher: KeyHasher,
        bucket: str,
        per_minute: float,
        burst: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kv = kv
        self.hasher = hasher
        self.bucket = bucket
        self.rate_s = per_minute / 60.0
        self.burst = max(1.0, burst)
        self._clock = clock

    def _state(self, raw: bytes, now: float) -> float:
        """Tokens now (an unreadable or absent value is a full bucket)."""
        if not raw:
            return self.burst
        try:
            data = json.loads(raw)
            tokens, at = float(data["tokens"]), float(data["at"])
        except (ValueError, TypeError, KeyError):
            return self.burst
        return min(self.burst, tokens + max(0.0, now - at) * self.rate_s)

    async def take(self, key: str) -> float:
        """0 when a token was taken, else the seconds until one may be (nothing taken)."""
        name = self.hasher.digest("rate", key)
        for _ in range(CAS_ATTEMPTS):
            revision, raw = await self.kv.read(self.bucket, name)
            now = self._clock()
            tokens = self._state(raw, now)
            if tokens < 1.0:
                return (1.0 - tokens) / self.rate_s
            try:
                await self.kv.write(
                    self.bucket, name, json.dumps({"at": now, "tokens": tokens - 1.0}).encode(), revision
                )
            except Conflict:
                continue
            return 0.0
        raise KvUnavailable("rate bucket contended: compare-and-set lost every time")
