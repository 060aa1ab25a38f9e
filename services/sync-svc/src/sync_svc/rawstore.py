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
from nats.js.api import ObjectStoreConfig, PubAck, StorageType
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
        self._prefix = uuid.uuid4().hex[:12]
        self._count = 0

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
        ref = self.reference(mailbox_id, event_id, data)
        acks = await self.send(ref, data)
        async with asyncio.timeout(self.timeout_s):
            await asyncio.gather(*acks)
        return ref

    def reference(self, mailbox_id: str, event_id: str, data: bytes) -> RawRef:
        """Where :meth:`send` will store ``data`` (and its digest, for the event that points at it)."""
        name = f"{mailbox_id}/{event_id}"
        return RawRef(bucket=self.bucket, name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest())

    async def send(self, ref: RawRef, data: bytes) -> list[asyncio.Future[PubAck]]:
        """Send the object without waiting: the acks to await (all, under a deadline) before
        anything that points at it is published."""
        if self._store is None:
            await self._open()  # the bucket exists
        js = self._context()
        self._count += 1
        nuid = f"{self._prefix}{self._count:x}"  # unique per object: a random process prefix + a counter
        chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]
        info = {  # ObjectInfo.as_dict()'s fields, built directly (its dataclass walk costs more than the rest)
            "name": ref.name,
            "bucket": self.bucket,
            "nuid": nuid,
            "size": len(data),
            "mtime": datetime.now(UTC).isoformat(),
            "chunks": len(chunks),
            "digest": "SHA-256=" + base64.urlsafe_b64encode(bytes.fromhex(ref.sha256)).decode(),
            "deleted": False,
            "options": {"max_chunk_size": CHUNK_BYTES},
        }
        meta_subject = f"$O.{self.bucket}.M.{base64.urlsafe_b64encode(ref.name.encode()).decode()}"
        acks = [await js.publish_async(f"$O.{self.bucket}.C.{nuid}", chunk) for chunk in chunks]
        acks.append(await js.publish_async(meta_subject, json.dumps(info).encode(), headers=ROLLUP))
        return acks

    async def get(self, name: str) -> bytes:
        store = await self._open()
        async with asyncio.timeout(self.timeout_s):
            result = await store.get(name)
        return bytes(result.data or b"")
