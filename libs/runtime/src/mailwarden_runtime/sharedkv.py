"""Limit state shared by every process of a service, in JetStream Key-Value buckets.

Why KV: several processes share the work (tester-svc's testers, sync-svc's workers), so a
per-host limit or an auth-failure count kept in one process's memory lets N processes do N times
as much to one customer server. JetStream KV gives every process the same view with
compare-and-set writes (expected revision), with no store of our own beside NATS.

Keys never name a host or an account: they are a keyed hash (HMAC-SHA256 under a key derived
from the transit key ring, which every process of the service has) of what they stand for.

Every call has a short deadline. A failing call raises :class:`KvUnavailable` and pauses KV use
for ``retry_after_s``, so a KV outage costs one deadline, not one per use; the callers then fall
back to their local limits. ``on_health`` and ``observe`` let the service keep its own metrics.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
from nats.aio.client import Client
from nats.js.api import StorageType
from nats.js.client import JetStreamContext
from nats.js.errors import (
    BadRequestError,
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from mailwarden_runtime.crypto import KeyRing

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_AFTER_S = 5.0


class KvUnavailable(Exception):
    """The shared state could not be read or written in time; the caller falls back."""


class Conflict(Exception):
    """Another process wrote the key since we read it (compare-and-set lost)."""


def limits_key(keyring: KeyRing, label: bytes) -> bytes:
    """The hashing key, derived from the transit ring's sealing key (shared by every process of
    the service) and the service's own ``label`` (two services' keys never meet).

    Rotating the transit key changes every hash: breaker state and leases start afresh (both are
    short-lived), and during a rolling rotation the two halves of the fleet count apart.
    """
    return hmac.new(keyring.keys[0][1], label, hashlib.sha256).digest()


class KeyHasher:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def digest(self, *parts: str) -> str:
        """A KV-safe key for ``parts`` (hex; 128 bits are plenty to avoid collisions)."""
        text = "\0".join(parts).encode()
        return hmac.new(self._key, text, hashlib.sha256).hexdigest()[:32]


@dataclasses.dataclass(frozen=True)
class BucketSpec:
    name: str
    ttl_s: float
    description: str


class SharedKv:
    """Opens (creating them if needed) the buckets on the service's NATS connection; one place for
    deadlines, error mapping and the pause after a failure."""

    def __init__(
        self,
        connection: Callable[[], Client | None],
        specs: list[BucketSpec],
        *,
        replicas: int,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_health: Callable[[bool], None] | None = None,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        self._connection = connection
        self.replicas = replicas
        self.timeout_s = timeout_s
        self.specs = {spec.name: spec for spec in specs}
        self._buckets: dict[str, KeyValue] = {}
        self._lock = asyncio.Lock()
        self._clock = clock
        self._on_health = on_health or (lambda degraded: None)
        self._observe = observe or (lambda op, seconds: None)
        self._paused_until = 0.0
        self.degraded = False

    def connection(self) -> Client | None:
        """The service's NATS connection, None while there is none (a watch of a bucket uses it)."""
        return self._connection()

    @property
    def retry_after_s(self) -> float:
        """How long KV is left alone after a failure."""
        return RETRY_AFTER_S

    # --- buckets ------------------------------------------------------------------------------
    async def ensure(self) -> None:
        """Create or open the buckets; idempotent, safe from every process at once."""
        async with self._lock:
            nc = self._connection()
            if nc is None or not nc.is_connected:
                raise KvUnavailable("not connected to NATS")
            js = nc.jetstream()
            for spec in self.specs.values():
                if spec.name not in self._buckets:
                    self._buckets[spec.name] = await self._open(js, spec)

    async def reopen(self) -> None:
        """Open the buckets afresh, re-creating any that was lost (a watch that lost its bucket)."""
        async with self._lock:
            self._buckets.clear()
        await self.ensure()

    async def open_at_start(self) -> bool:
        """:meth:`ensure` under a deadline, logging instead of raising: callers fall back meanwhile."""
        try:
            async with asyncio.timeout(self.timeout_s * 5):
                await self.ensure()
        except (KvUnavailable, nats.errors.Error, TimeoutError, OSError) as exc:
            self._failed(exc)
            return False
        return True

    async def _open(self, js: JetStreamContext, spec: BucketSpec) -> KeyValue:
        stream = f"KV_{spec.name}"
        try:
            info = await js.stream_info(stream)
        except NotFoundError:
            try:
                kv = await js.create_key_value(
                    bucket=spec.name,
                    description=spec.description,
                    history=1,
                    ttl=spec.ttl_s,
                    storage=StorageType.FILE,
                    replicas=self.replicas,
                    direct=True,
                )
                log.info("key-value bucket created", extra={"bucket": spec.name})
                return kv
            except BadRequestError:  # another process created it in the meantime
                info = await js.stream_info(stream)
        config = info.config
        # Never shorten another process's TTL: values carry their own times, the TTL only cleans up.
        max_age = config.max_age or math.inf  # 0: no limit
        if max_age < spec.ttl_s or config.num_replicas != self.replicas:
            if max_age < spec.ttl_s:
                config.max_age = spec.ttl_s
            config.num_replicas = self.replicas
            await js.update_stream(config)
            log.info("key-value bucket updated", extra={"bucket": spec.name})
        try:
            return await js.key_value(spec.name)
        except BucketNotFoundError:
            raise KvUnavailable(f"bucket {spec.name} vanished") from None

    async def _bucket(self, name: str) -> KeyValue:
        kv = self._buckets.get(name)
        if kv is None:
            await self.ensure()
            kv = self._buckets[name]
        return kv

    # --- health -------------------------------------------------------------------------------
    def _check_paused(self) -> None:
        if self._clock() < self._paused_until:
            raise KvUnavailable("paused after a recent failure")

    def _failed(self, exc: BaseException) -> KvUnavailable:
        self._paused_until = self._clock() + self.retry_after_s
        self._buckets.clear()  # re-open (and re-create if lost) on the next attempt
        if not self.degraded:
            self.degraded = True
            self._on_health(True)
            log.warning(
                "shared limits unavailable: local limits only until JetStream KV answers",
                extra={"error": type(exc).__name__},
            )
        return KvUnavailable(type(exc).__name__)

    def _succeeded(self) -> None:
        if self.degraded:
            self.degraded = False
            self._on_health(False)
            log.warning("shared limits available again")

    # --- operations ---------------------------------------------------------------------------
    async def _call(self, op: str, bucket: str, action: Callable[[KeyValue], Awaitable[T]]) -> T:
        """Run ``action`` on the bucket under the deadline; any failure becomes :class:`KvUnavailable`."""
        self._check_paused()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await action(await self._bucket(bucket))
        except (Conflict, KeyWrongLastSequenceError):
            self._observe("conflict", time.perf_counter() - started)
            self._succeeded()
            raise Conflict(bucket) from None
        except (KvUnavailable, nats.errors.Error, TimeoutError, OSError) as exc:
            raise self._failed(exc) from None
        self._observe(op, time.perf_counter() - started)
        self._succeeded()
        return result

    async def read(self, bucket: str, key: str) -> tuple[int, bytes]:
        """``(revision, value)``; ``(0, b"")`` when the key is absent, deleted or expired."""

        async def get(kv: KeyValue) -> tuple[int, bytes]:
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                return 0, b""
            return entry.revision or 0, entry.value or b""

        return await self._call("read", bucket, get)

    async def write(self, bucket: str, key: str, value: bytes, revision: int) -> int:
        """Write only if the key is still at ``revision`` (0: absent): the new revision, or :class:`Conflict`."""

        async def put(kv: KeyValue) -> int:
            new = await (kv.update(key, value, last=revision) if revision else kv.create(key, value))
            return int(new)

        return await self._call("write", bucket, put)

    async def delete(self, bucket: str, key: str) -> None:
        async def remove(kv: KeyValue) -> None:
            await kv.delete(key)

        await self._call("delete", bucket, remove)
