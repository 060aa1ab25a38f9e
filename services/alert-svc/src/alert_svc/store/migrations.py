"""One-time migrations of alert-svc's stored documents, run at start-up after the indexes.

Each records that it ran in ``alert_svc_meta`` (``_id`` the migration's name), so it runs once
per database.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from alert_svc.store.alerts import ALERTS, AlertDoc, open_scopes
from mailwarden_runtime.documents import fields
from mailwarden_runtime.mongo import Document

META = "alert_svc_meta"


class Migrations:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.alerts: AsyncCollection[Document] = db[ALERTS]
        self.meta: AsyncCollection[Document] = db[META]

    async def run(self) -> None:
        await self._once("open_in", self._backfill_open_in)

    async def _once(self, name: str, migrate: Callable[[], Awaitable[None]]) -> None:
        if await self.meta.find_one({"_id": name}):
            return
        await migrate()
        await self.meta.update_one({"_id": name}, {"$set": {"done_at": datetime.now(UTC)}}, upsert=True)

    async def _backfill_open_in(self) -> None:
        """Open alerts stored before ``open_in`` existed get their scopes."""
        async for found in self.alerts.find(
            {"state": "open", "open_in": {"$exists": False}}, {"outbox": 0, "occurrences": 0}
        ):
            doc = AlertDoc.model_validate(found)
            await self.alerts.update_one(
                {"_id": doc.id}, {"$set": fields(AlertDoc, open_in=open_scopes(doc))}
            )
