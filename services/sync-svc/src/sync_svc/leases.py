"""Which worker syncs which mailbox: leases in NATS Key-Value, so mailboxes spread over workers.

Bucket ``MW_SYNC_LEASES``: key = mailbox id, value ``{"owner", "until"}``. A worker takes a free or
expired lease with a compare-and-set write (create, or update on the revision it read), renews
it every TTL/3 the same way, and deletes it on release. A killed worker stops renewing, so its
mailboxes are taken over within one TTL (plus the clock skew between workers, which must stay
well under TTL/3). Bucket ``MW_SYNC_WORKERS`` holds one heartbeat per live worker, so each worker
takes about its fair share (eligible mailboxes / live workers, rounded up) and leaves the rest.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client
from nats.js.api import StorageType
from nats.js.errors import (
    BadRequestError,
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
)
from nats.js.kv import KeyValue
from pydantic import BaseModel, ValidationError

from mailwarden_runtime.buckets import kv_keys

log = logging.getLogger(__name__)

LEASES_BUCKET = "MW_SYNC_LEASES"
WORKERS_BUCKET = "MW_SYNC_WORKERS"
KV_ERRORS = (nats.errors.Error, TimeoutError, OSError)


class Expiry(BaseModel):
    """What a worker reads of a value in either bucket: until when it holds (Unix seconds); other
    fields are not read (a value without ``until`` has run out)."""

    until: float = 0.0


class LeaseValue(Expiry):
    """What a worker writes: a lease on a mailbox, or its heartbeat, held by ``owner``."""

    owner: str


@dataclass
class Held:
    revision: int
    until: float


class LeaseTable:
    """This worker's view of the leases: what it holds, and how to take, renew and give them back."""

    def __init__(
        self,
        connection: Callable[[], Client | None],
        owner: str,
        ttl_s: float,
        *,
        replicas: int = 1,
        timeout_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._connection = connection
        self.owner = owner
        self.ttl_s = ttl_s
        self.replicas = replicas
        self.timeout_s = timeout_s
        self._clock = clock
        self._leases: KeyValue | None = None
        self._workers: KeyValue | None = None
        self.held: dict[str, Held] = {}

    async def _bucket(self, name: str) -> KeyValue:
        nc = self._connection()
        if nc is None or not nc.is_connected:
            raise nats.errors.ConnectionClosedError
        js = nc.jetstream()
        try:
            return await js.key_value(name)
        except BucketNotFoundError:
            pass
        try:
            return await js.create_key_value(
                bucket=name,
                history=1,
                ttl=max(self.ttl_s * 20, 300.0),  # cleans up keys nobody renews; values carry their own times
                storage=StorageType.FILE,
                replicas=self.replicas,
            )
        except BadRequestError:  # another worker created it meanwhile
            return await js.key_value(name)

    async def open(self) -> None:
        async with asyncio.timeout(self.timeout_s * 3):
            self._leases = await self._bucket(LEASES_BUCKET)
            self._workers = await self._bucket(WORKERS_BUCKET)

    def _value(self) -> bytes:
        return LeaseValue(owner=self.owner, until=self._clock() + self.ttl_s).model_dump_json().encode()

    def _expired(self, raw: bytes | None) -> bool:
        """Whether a value has run out; an empty or unreadable one (not JSON, not an object, ``until``
        not a number) is taken as expired, so a corrupt value never blocks a mailbox for good."""
        try:
            return Expiry.model_validate_json(raw or b"{}").until <= self._clock()
        except ValidationError:
            return True

    async def heartbeat(self) -> int:
        """Say this worker is alive; return how many workers are (at least 1: this one)."""
        if self._workers is None:
            await self.open()
        assert self._workers is not None
        async with asyncio.timeout(self.timeout_s):
            await self._workers.put(self.owner.replace(".", "_"), self._value())
            nc = self._connection()
            if nc is None:
                raise nats.errors.ConnectionClosedError
            keys = await kv_keys(nc.jetstream(), WORKERS_BUCKET)
            live = 0
            for key in keys:
                try:
                    entry = await self._workers.get(key)
                except KeyNotFoundError:
                    continue
                live += 0 if self._expired(entry.value) else 1
        return max(live, 1)

    @staticmethod
    def fair_share(eligible: int, workers: int, cap: int) -> int:
        return min(cap, math.ceil(eligible / max(workers, 1)))

    async def acquire(self, mailbox_id: str) -> bool:
        """Take the lease when free or expired; False when another worker holds it."""
        if self._leases is None:
            await self.open()
        assert self._leases is not None
        try:
            async with asyncio.timeout(self.timeout_s):
                try:  # a free mailbox in one round trip; only a taken one is read first
                    revision = await self._leases.create(mailbox_id, self._value())
                except (KeyWrongLastSequenceError, BadRequestError):
                    entry = await self._leases.get(mailbox_id)
                    if not self._expired(entry.value):
                        return False
                    revision = await self._leases.update(mailbox_id, self._value(), last=entry.revision)
        except (KeyWrongLastSequenceError, BadRequestError, KeyNotFoundError):
            return False  # lost the race
        self.held[mailbox_id] = Held(revision, self._clock() + self.ttl_s)
        return True

    async def renew(self, mailbox_id: str) -> bool:
        """Push the lease forward; False when it was lost (taken over after it expired)."""
        held = self.held.get(mailbox_id)
        if held is None or self._leases is None:
            return False
        try:
            async with asyncio.timeout(self.timeout_s):
                held.revision = await self._leases.update(mailbox_id, self._value(), last=held.revision)
        except (KeyWrongLastSequenceError, BadRequestError, KeyNotFoundError):
            self.held.pop(mailbox_id, None)
            return False
        held.until = self._clock() + self.ttl_s
        return True

    def still_valid(self, mailbox_id: str) -> bool:
        """Whether our lease has not run out (a renewal that could not reach KV does not extend it)."""
        held = self.held.get(mailbox_id)
        return held is not None and held.until > self._clock()

    async def release(self, mailbox_id: str) -> None:
        held = self.held.pop(mailbox_id, None)
        if held is None or self._leases is None:
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._leases.delete(mailbox_id, last=held.revision)
        except (*KV_ERRORS, KeyWrongLastSequenceError, BadRequestError):
            pass  # it expires on its own

    async def release_all(self) -> None:
        for mailbox_id in list(self.held):
            await self.release(mailbox_id)
        if self._workers is not None:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self._workers.delete(self.owner.replace(".", "_"))
            except (*KV_ERRORS, BadRequestError):
                pass
