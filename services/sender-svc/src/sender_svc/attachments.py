"""Attachments by reference: objects in the JetStream Object Store buckets the sender may read.

At submission an object's size is read (the message size is checked before anything is queued);
when sending, its bytes. Only the buckets in ``MW_SENDER_ATTACHMENT_BUCKETS`` are readable, so a
caller cannot mail out what other services keep in theirs. Those buckets are created at startup
when missing (:meth:`ObjectAttachments.ensure`), so callers can put objects before the first send.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from nats.aio.client import Client
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError

from contracts.errors import ErrorCode
from contracts.outgoing import ObjectRef, SendEmailRequested
from mailwarden_mailnet.errors import NetError
from mailwarden_runtime.buckets import ensure_object_store

TIMEOUT_S = 10.0


class AttachmentError(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ObjectAttachments:
    def __init__(self, connection: Callable[[], Client], buckets: frozenset[str]) -> None:
        self._connection = connection
        self.buckets = buckets

    async def ensure(self, max_age_s: float, replicas: int) -> None:
        """Create every readable bucket that does not exist yet."""
        js = self._connection().jetstream()
        for bucket in sorted(self.buckets):
            async with asyncio.timeout(TIMEOUT_S):
                await ensure_object_store(
                    js,
                    bucket,
                    description="sender-svc: attachments referenced by SendEmailRequested",
                    ttl_s=max_age_s,
                    replicas=replicas,
                )

    def _check(self, ref: ObjectRef, field: str) -> None:
        if ref.bucket not in self.buckets:
            raise AttachmentError(field, f"bucket {ref.bucket} is not one attachments may come from")

    async def sizes(self, req: SendEmailRequested) -> list[int]:
        """The size of every referenced object; refuses unknown buckets and missing objects by field."""
        sizes: list[int] = []
        for i, att in enumerate(req.attachments):
            if att.object is None:
                continue
            field = f"attachments.{i}.object"
            self._check(att.object, field)
            try:
                async with asyncio.timeout(TIMEOUT_S):
                    store = await self._connection().jetstream().object_store(att.object.bucket)
                    info = await store.get_info(att.object.name)
            except (ObjectNotFoundError, NotFoundError, BucketNotFoundError):
                raise AttachmentError(field, "no such object") from None
            sizes.append(int(info.size or 0))
        return sizes

    async def read(self, req: SendEmailRequested) -> dict[int, bytes]:
        """Every attachment's bytes by index (inline ones decoded, referenced ones fetched)."""
        out: dict[int, bytes] = {}
        for i, att in enumerate(req.attachments):
            inline = att.inline_bytes()
            if inline is not None:
                out[i] = inline
                continue
            assert att.object is not None
            self._check(att.object, f"attachments.{i}.object")
            try:
                async with asyncio.timeout(TIMEOUT_S):
                    store = await self._connection().jetstream().object_store(att.object.bucket)
                    result = await store.get(att.object.name)
            except (ObjectNotFoundError, NotFoundError, BucketNotFoundError):
                raise NetError(ErrorCode.ATTACHMENT_UNAVAILABLE, f"attachment {i} is gone") from None
            except TimeoutError:
                raise NetError(ErrorCode.SERVER_TEMPORARY_ERROR, "the Object Store did not answer") from None
            out[i] = bytes(result.data or b"")
        return out
