"""The raw RFC 5322 bytes of every synchronized message, in a JetStream Object Store bucket.

Object name ``<mailbox id>/<event id>``: putting the same message again (a replay after a crash)
overwrites it with the same bytes, so the store needs no ledger of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable

from nats.aio.client import Client
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.errors import BadRequestError, BucketNotFoundError
from nats.js.object_store import ObjectStore

from contracts.email import RawRef

DAY_S = 86_400.0


class RawStore:
    def __init__(
        self,
        connection: Callable[[], Client | None],
        bucket: str,
        max_age_days: float,
        replicas: int = 1,
        timeout_s: float = 30.0,
    ) -> None:
        self._connection = connection
        self.bucket = bucket
        self.max_age_s = max_age_days * DAY_S
        self.replicas = replicas
        self.timeout_s = timeout_s
        self._store: ObjectStore | None = None
        self._lock = asyncio.Lock()

    async def _open(self) -> ObjectStore:
        async with self._lock:
            if self._store is not None:
                return self._store
            nc = self._connection()
            if nc is None:
                raise ConnectionError("not connected to NATS")
            js = nc.jetstream()
            try:
                self._store = await js.object_store(self.bucket)
            except BucketNotFoundError:
                config = ObjectStoreConfig(
                    bucket=self.bucket,
                    description="sync-svc: raw RFC 5322 messages referenced by EmailReceived",
                    ttl=self.max_age_s,
                    storage=StorageType.FILE,
                    replicas=self.replicas,
                )
                try:
                    self._store = await js.create_object_store(self.bucket, config=config)
                except BadRequestError:  # another worker created it meanwhile
                    self._store = await js.object_store(self.bucket)
            return self._store

    async def put(self, mailbox_id: str, event_id: str, data: bytes) -> RawRef:
        store = await self._open()
        name = f"{mailbox_id}/{event_id}"
        async with asyncio.timeout(self.timeout_s):
            await store.put(name, data)
        return RawRef(bucket=self.bucket, name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest())

    async def get(self, name: str) -> bytes:
        store = await self._open()
        async with asyncio.timeout(self.timeout_s):
            result = await store.get(name)
        return bytes(result.data or b"")
