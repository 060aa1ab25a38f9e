"""What the channel queues share: an item leased to one worker at a time, retried until done."""

from __future__ import annotations

from datetime import UTC, datetime

from mailwarden_runtime.documents import Stored

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Queued(Stored):
    """Taken by a worker while ``lease_until`` is ahead; an expired lease frees it after a crash."""

    created_at: datetime
    attempts: int = 0
    lease_until: datetime = EPOCH
    last_error: str | None = None
