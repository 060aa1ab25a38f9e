"""mailbox-svc's MongoDB access: one repository per aggregate, all on the service's database.

The mailboxes (with their sealed logins and the sync pauses), the test runs, the jobs, and the
read model of profiles and settings kept from profile-svc's events (``readmodels.follow``)."""

from __future__ import annotations

from dataclasses import dataclass

from pymongo.asynchronous.database import AsyncDatabase

from mailbox_svc.store.jobs import JOBS, JobStore
from mailbox_svc.store.mailboxes import MAILBOXES, MailboxStore
from mailbox_svc.store.runs import RunStore
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.readmodels import ReadModels

__all__ = ["OUTBOX_COLLECTIONS", "Stores"]

# The mailboxes and the jobs carry their events in the same write (outbox).
OUTBOX_COLLECTIONS = (MAILBOXES, JOBS)


@dataclass(frozen=True)
class Stores:
    mailboxes: MailboxStore
    runs: RunStore
    jobs: JobStore
    read: ReadModels
    """Profiles and the org's settings, kept from profile-svc's events (``readmodels.follow``)."""

    @classmethod
    def on(cls, db: AsyncDatabase[Document]) -> Stores:
        return cls(MailboxStore(db), RunStore(db), JobStore(db), ReadModels(db))

    async def ensure_indexes(self) -> None:
        await self.mailboxes.ensure_indexes()
        await self.runs.ensure_indexes()
        await self.jobs.ensure_indexes()
