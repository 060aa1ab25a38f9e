"""sender-svc's MongoDB access: one repository per aggregate, all on the service's database.

The send queue (each send with its Sent-folder copy), and the read model of the mailboxes it may
send through, their profiles and the org's settings, kept from mailbox-svc's and profile-svc's
events (``readmodels.follow``), with what the sender learns of them (a refused login, a SIZE).
"""

from __future__ import annotations

from dataclasses import dataclass

from pymongo.asynchronous.database import AsyncDatabase

from mailwarden_runtime.mongo import Document
from sender_svc.store.readmodels import ReadModelStore
from sender_svc.store.sends import SENDS, SendStore

__all__ = ["OUTBOX_COLLECTIONS", "Stores"]

# A send carries its outcome events in the same write (outbox).
OUTBOX_COLLECTIONS = (SENDS,)


@dataclass(frozen=True)
class Stores:
    sends: SendStore
    read: ReadModelStore

    @classmethod
    def on(cls, db: AsyncDatabase[Document], read_cache_s: float = 0.0) -> Stores:
        """``read_cache_s``: how long read-model reads are kept (``MW_SENDER_READ_CACHE_S``)."""
        return cls(SendStore(db), ReadModelStore(db, read_cache_s))

    async def ensure_indexes(self) -> None:
        await self.sends.ensure_indexes()
