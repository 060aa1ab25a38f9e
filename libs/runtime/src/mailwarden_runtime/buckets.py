"""JetStream buckets: Object Store buckets a service owns, opened or created with one call, and the
keys of a Key-Value bucket read from the stream's own subject count.

Creating at startup (not at first use) means a caller can put objects before the first message
needs them, and every replica agrees on the bucket's settings; a sibling creating it at the same
moment is not an error.
"""

from __future__ import annotations

import logging

from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.client import JetStreamContext
from nats.js.errors import BadRequestError, BucketNotFoundError
from nats.js.object_store import ObjectStore

log = logging.getLogger(__name__)


async def ensure_object_store(
    js: JetStreamContext, bucket: str, *, description: str, ttl_s: float, replicas: int
) -> ObjectStore:
    """The bucket, created with these settings when it does not exist (an existing one is kept as is)."""
    try:
        return await js.object_store(bucket)
    except BucketNotFoundError:
        pass
    config = ObjectStoreConfig(
        bucket=bucket, description=description, ttl=ttl_s, storage=StorageType.FILE, replicas=replicas
    )
    try:
        store = await js.create_object_store(bucket, config=config)
    except BadRequestError:  # a sibling created it meanwhile
        return await js.object_store(bucket)
    log.info("object store bucket created", extra={"bucket": bucket})
    return store


async def kv_keys(js: JetStreamContext, bucket: str) -> list[str]:
    """Every key with a message in the Key-Value ``bucket``, sorted; deleted keys may be among them
    (their delete marker is a message), so callers ``get`` each and skip the missing.

    Not ``KeyValue.keys()``: nats-py builds that on a watcher whose "initial values done" marker can
    come before buffered entries (nats-io/nats.py#842), so it sometimes answers "no keys" for a
    bucket that has some (seen here: a token listing came back empty once in a full run). The
    stream's subject count is one request the server answers from its index.
    """
    prefix = f"$KV.{bucket}."
    info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"{prefix}>")
    return sorted(subject[len(prefix) :] for subject in (info.state.subjects or {}))
