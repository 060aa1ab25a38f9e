"""tester-svc's limit state shared by every tester, in two JetStream KV buckets.

The machinery (deadlines, compare-and-set, the pause after a failure, keyed-hash keys) is
:mod:`mailwarden_runtime.sharedkv`, shared with sync-svc; here are the testers' buckets, their
hashing label and metrics. When KV does not answer, tests fall back to their local limits
(``limits.py`` says why).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from nats.aio.client import Client

from mailwarden_runtime import sharedkv
from mailwarden_runtime.crypto import KeyRing
from mailwarden_runtime.sharedkv import BucketSpec, Conflict, KeyHasher, KvUnavailable
from tester_svc import metrics

BREAKER_BUCKET = "MW_TESTER_BREAKER"
HOSTS_BUCKET = "MW_TESTER_HOSTS"
# Garbage collection of idle host keys; must outlive a lease's TTL (leases are rewritten while renewed).
HOSTS_TTL_S = 3600.0
RETRY_AFTER_S = 5.0
KEY_LABEL = b"mailwarden tester-svc shared limits v1"

__all__ = [
    "BREAKER_BUCKET",
    "HOSTS_BUCKET",
    "Conflict",
    "KeyHasher",
    "KvUnavailable",
    "SharedKv",
    "limits_key",
]


def limits_key(keyring: KeyRing) -> bytes:
    return sharedkv.limits_key(keyring, KEY_LABEL)


def _health(degraded: bool) -> None:
    metrics.SHARED_LIMITS_DEGRADED.set(1 if degraded else 0)


def _observe(op: str, seconds: float) -> None:
    metrics.KV_SECONDS.labels(op=op).observe(seconds)


class SharedKv(sharedkv.SharedKv):
    """The breaker and host buckets, with the testers' metrics."""

    def __init__(
        self,
        connection: Callable[[], Client | None],
        *,
        replicas: int,
        breaker_window_s: float,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        specs = [
            BucketSpec(
                BREAKER_BUCKET, breaker_window_s, "tester-svc: auth failures per (host, user), hashed"
            ),
            BucketSpec(HOSTS_BUCKET, HOSTS_TTL_S, "tester-svc: connection leases per host"),
        ]
        super().__init__(
            connection,
            specs,
            replicas=replicas,
            timeout_s=timeout_s,
            clock=clock,
            on_health=_health,
            observe=_observe,
        )

    @property
    def retry_after_s(self) -> float:
        return RETRY_AFTER_S  # read at each failure: tests shorten it
