"""Limits every sender-svc replica shares, in JetStream KV (:mod:`mailwarden_runtime.sharedkv`).

Two buckets: ``MW_SENDER_HOSTS`` (a lease per open SMTP connection: the profile's
``max_concurrent_connections`` per host across every replica) and ``MW_SENDER_RATES`` (a token
bucket per mailbox: ``MW_SENDER_RATE_PER_MINUTE`` across every replica). Keys are keyed hashes,
never a host or a mailbox id. KV not answering: each process's own limits hold alone meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client

from mailwarden_runtime.crypto import KeyRing
from mailwarden_runtime.hostleases import HostLeases
from mailwarden_runtime.shared_rate import SharedRate
from mailwarden_runtime.sharedkv import BucketSpec, KeyHasher, SharedKv, limits_key
from sender_svc import metrics
from sender_svc.config import Settings

HOSTS_BUCKET = "MW_SENDER_HOSTS"
RATES_BUCKET = "MW_SENDER_RATES"
HOSTS_TTL_S = 3600.0  # cleans idle host keys; outlives a lease (rewritten while renewed)
KEY_LABEL = b"mailwarden sender-svc shared limits v1"


def _health(degraded: bool) -> None:
    metrics.SHARED_LIMITS_DEGRADED.set(1 if degraded else 0)


def _observe(op: str, seconds: float) -> None:
    metrics.KV_SECONDS.labels(op=op).observe(seconds)


@dataclass(frozen=True)
class SharedLimits:
    kv: SharedKv
    leases: HostLeases
    rate: SharedRate


def shared_limits(
    connection: Callable[[], Client | None], keyring: KeyRing, settings: Settings
) -> SharedLimits:
    # A full bucket refills in burst / rate; its key may be dropped after that (it reads as full).
    refill_s = settings.sender_rate_burst / (settings.sender_rate_per_minute / 60.0)
    specs = [
        BucketSpec(HOSTS_BUCKET, HOSTS_TTL_S, "sender-svc: SMTP connection leases per host, hashed"),
        BucketSpec(RATES_BUCKET, max(60.0, 2 * refill_s), "sender-svc: send rate per mailbox, hashed"),
    ]
    kv = SharedKv(
        connection,
        specs,
        replicas=settings.stream_replicas,
        timeout_s=settings.sender_kv_timeout_s,
        on_health=_health,
        observe=_observe,
    )
    hasher = KeyHasher(limits_key(keyring, KEY_LABEL))
    return SharedLimits(
        kv=kv,
        leases=HostLeases(kv, hasher, settings.sender_host_lease_ttl_s, HOSTS_BUCKET),
        rate=SharedRate(
            kv, hasher, RATES_BUCKET, settings.sender_rate_per_minute, settings.sender_rate_burst
        ),
    )
