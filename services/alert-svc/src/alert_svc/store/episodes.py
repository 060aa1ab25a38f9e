"""Sync error episodes that have ended: a MailboxSyncFailed handled after its episode's
MailboxSyncRecovered (a redelivery, or the two consumers out of step) must not open an alert
that nothing would resolve. One small document per recovered episode."""

from __future__ import annotations

from datetime import datetime

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from mailwarden_runtime.documents import Stored, fields
from mailwarden_runtime.mongo import Document


class EndedEpisode(Stored):
    """One ended episode (``_id`` the episode id)."""

    mailbox_id: str
    ended_at: datetime


class EndedEpisodes:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.episodes: AsyncCollection[Document] = db["sync_episodes_ended"]

    async def end(self, episode_id: str, mailbox_id: str, at: datetime) -> None:
        await self.episodes.update_one(
            {"_id": episode_id},
            {"$setOnInsert": fields(EndedEpisode, mailbox_id=mailbox_id, ended_at=at)},
            upsert=True,
        )

    async def ended(self, episode_id: str) -> bool:
        return await self.episodes.find_one({"_id": episode_id}, {"_id": 1}) is not None
