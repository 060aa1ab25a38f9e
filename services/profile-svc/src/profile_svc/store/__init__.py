"""profile-svc's MongoDB access: one repository per aggregate (profiles, the organisation's
settings, mailbox usage), all on the service's database."""

from __future__ import annotations

from dataclasses import dataclass

from pymongo.asynchronous.database import AsyncDatabase

from mailwarden_runtime.mongo import Document
from profile_svc.store.profiles import PROFILES, ProfileStore
from profile_svc.store.settings import SETTINGS, SettingsStore
from profile_svc.store.usage import UsageStore

__all__ = ["OUTBOX_COLLECTIONS", "Stores"]

# Profiles and the settings carry their events in their outbox.
OUTBOX_COLLECTIONS = (PROFILES, SETTINGS)


@dataclass(frozen=True)
class Stores:
    profiles: ProfileStore
    settings: SettingsStore
    usage: UsageStore

    @classmethod
    def on(cls, db: AsyncDatabase[Document]) -> Stores:
        return cls(ProfileStore(db), SettingsStore(db), UsageStore(db))

    async def ensure_indexes(self) -> None:
        await self.profiles.ensure_indexes()
        await self.usage.ensure_indexes()
