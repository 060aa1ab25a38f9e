"""The raw RFC 5322 bytes of every synchronized message, in a JetStream Object Store bucket.

Object name ``<mailbox id>/<event id>``: putting the same message again (a replay after a crash)
overwrites it with the same bytes, so the store needs no ledger of its own.

Written with the Object Store's own layout (chunks on ``$O.<bucket>.C.<nuid>``, the metadata
rolled up on ``$O.<bucket>.M.<name>``; any Object Store client reads them), but pipelined: chunks
and metadata are sent with ``publish_async`` and their acks awaited together, where nats-py's
``put`` first reads the object's info (a round trip) and then awaits each publish in turn. What a
replay overwrites is not purged: its chunks stay until the bucket's max age (a crash is rare;
a purge per put would cost a round trip every time).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from nats.aio.client import Client
from nats.js.api import ObjectInfo, ObjectMetaOptions, ObjectStoreConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError, BucketNotFoundError
from nats.js.object_store import ObjectStore

from contracts.email import RawRef

DAY_S = 86_400.0
CHUNK_BYTES = 128 * 1024  # the Object Store's default chunk size
ROLLUP = {"Nats-Rollup": "sub"}  # the new metadata replaces the old


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
        self._js: tuple[Client, JetStreamContext] | None = None  # one context: its async-ack inbox

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

    def _context(self) -> JetStreamContext:
        nc = self._connection()
        if nc is None:
            raise ConnectionError("not connected to NATS")
        if self._js is None or self._js[0] is not nc:
            self._js = (nc, nc.jetstream())
        return self._js[1]

    async def put(self, mailbox_id: str, event_id: str, data: bytes) -> RawRef:
        """Chunks and metadata sent back to back, their acks awaited together (raises if not stored)."""
        await self._open()  # the bucket exists
        js = self._context()
        name = f"{mailbox_id}/{event_id}"
        digest = hashlib.sha256(data)
        nuid = uuid.uuid4().hex
        chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]
        info = ObjectInfo(
            name=name,
            bucket=self.bucket,
            nuid=nuid,
            size=len(data),
            chunks=len(chunks),
            mtime=datetime.now(UTC).isoformat(),
            digest="SHA-256=" + base64.urlsafe_b64encode(digest.digest()).decode(),
            options=ObjectMetaOptions(max_chunk_size=CHUNK_BYTES),
        )
        meta_subject = f"$O.{self.bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"
        async with asyncio.timeout(self.timeout_s):
            acks = [await js.publish_async(f"$O.{self.bucket}.C.{nuid}", chunk) for chunk in chunks]
            acks.append(
                await js.publish_async(meta_subject, json.dumps(info.as_dict()).encode(), headers=ROLLUP)
            )
            await asyncio.gather(*acks)
        return RawRef(bucket=self.bucket, name=name, size=len(data), sha256=digest.hexdigest())

    async def get(self, name: str) -> bytes:
        store = await self._open()
        async with asyncio.timeout(self.timeout_s):
            result = await store.get(name)
        return bytes(result.data or b"")
