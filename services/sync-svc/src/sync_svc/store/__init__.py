"""sync-svc's MongoDB access: one repository per aggregate, all on the service's database.

The read models it learns from events (``mailboxes``, ``profiles``, ``settings``:
:mod:`mailwarden_runtime.readmodels`), sync state per mailbox (:mod:`~sync_svc.store.states`), the
ledger of published messages (:mod:`~sync_svc.store.ledger`), the answers about them
(:mod:`~sync_svc.store.answers`) and the revision counter (:mod:`~sync_svc.store.revision`).
"""

from __future__ import annotations

from dataclasses import dataclass

from pymongo.asynchronous.database import AsyncDatabase

from mailwarden_runtime.mongo import Document
from mailwarden_runtime.readmodels import ReadModels
from sync_svc.store.answers import AnswerStore
from sync_svc.store.ledger import LedgerStore
from sync_svc.store.revision import Revision
from sync_svc.store.states import StateStore

__all__ = ["Stores"]


@dataclass(frozen=True)
class Stores:
    read: ReadModels
    """Mailboxes, profiles and the org's settings, kept from events (``readmodels.follow``)."""
    revision: Revision
    states: StateStore
    ledger: LedgerStore
    answers: AnswerStore

    @classmethod
    def on(cls, db: AsyncDatabase[Document]) -> Stores:
        revision = Revision(db)
        ledger = LedgerStore(db)
        return cls(ReadModels(db), revision, StateStore(db, revision), ledger, AnswerStore(db, ledger))

    async def ensure_indexes(self) -> None:
        await self.ledger.ensure_indexes()
        await self.answers.ensure_indexes()
