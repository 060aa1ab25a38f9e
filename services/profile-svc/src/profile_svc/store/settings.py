"""The organisation's settings: one document (``_id`` ``org``), versioned, with its events in its outbox."""

from __future__ import annotations

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from mailwarden_runtime.documents import as_stored
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.outbox import OutboxEntry, new_document_outbox, with_outbox
from profile_svc.documents import SettingsDoc
from profile_svc.models import SettingsView

SETTINGS = "settings"
ORG = "org"


class SettingsStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._settings = db[SETTINGS]

    async def get_settings(self) -> SettingsView | None:
        found = await self._settings.find_one({"_id": ORG}, {"outbox": 0})
        return None if found is None else SettingsDoc.model_validate(found).view()

    async def init_settings(self, settings: SettingsView, entries: list[OutboxEntry]) -> bool:
        """Create the settings with their first event, once; False if they already exist."""
        try:
            result = await self._settings.update_one(
                {"_id": ORG},
                {"$setOnInsert": {**as_stored(settings), **new_document_outbox(entries)}},
                upsert=True,
            )
        except DuplicateKeyError:  # a sibling instance created them in the meantime
            return False
        return result.upserted_id is not None

    async def update_settings(self, version: int, settings: SettingsView, entries: list[OutboxEntry]) -> bool:
        result = await self._settings.update_one(
            {"_id": ORG, "version": version}, with_outbox({"$set": as_stored(settings)}, entries)
        )
        return result.modified_count == 1
