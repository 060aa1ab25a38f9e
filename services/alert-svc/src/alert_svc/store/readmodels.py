"""What alert-svc keeps of other services' data: org policy, profiles, mailboxes (from their events).

Each is upserted with the event's version, so an older event arriving late changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from alert_svc.rules import OrgPolicy
from contracts.events import SettingsSnapshot
from contracts.models import Owner
from mailwarden_runtime.documents import Stored
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.readmodels import NewestRow, newest_many


class ProfileModel(Stored):
    """What alert-svc keeps of a profile: its name for alert texts, the owner, the majority mail."""

    name: str | None = None
    owner: Owner | None = None
    majority_email: bool = False
    deleted: bool = False
    version: int = 0


class ReadModelStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.settings: AsyncCollection[Document] = db["org_settings"]
        self.profiles: AsyncCollection[Document] = db["profiles"]
        self.mailboxes: AsyncCollection[Document] = db["mailboxes"]

    async def ensure_indexes(self) -> None:
        await self.mailboxes.create_index("profile_id")

    async def policy(self) -> OrgPolicy:
        doc = await self.settings.find_one({"_id": "org"})
        if doc is None:
            return OrgPolicy()
        return OrgPolicy(frozenset(doc["alert_levels"]), bool(doc["notify_mailbox_owner"]))

    async def save_settings(self, snap: SettingsSnapshot) -> None:
        """Keep the newest settings; an older version arriving late changes nothing."""
        fields = {"alert_levels": list(snap.alert_levels), "notify_mailbox_owner": snap.notify_mailbox_owner}
        await self._versioned_upsert(self.settings, "org", snap.version, fields)

    async def save_profile(self, profile_id: str, version: int, fields: Document) -> None:
        await self._versioned_upsert(self.profiles, profile_id, version, fields)

    async def delete_profile(self, profile_id: str) -> None:
        # A tombstone with the highest version: a late Created/Updated cannot bring it back.
        await self.profiles.update_one(
            {"_id": profile_id}, {"$set": {"deleted": True, "version": 2**62}}, upsert=True
        )

    async def profile(self, profile_id: str) -> ProfileModel | None:
        found = await self.profiles.find_one({"_id": profile_id, "deleted": {"$ne": True}})
        return None if found is None else ProfileModel.model_validate(found)

    async def save_mailbox(self, mailbox_id: str, version: int, profile_id: str | None, active: bool) -> None:
        await self._versioned_upsert(
            self.mailboxes, mailbox_id, version, {"profile_id": profile_id, "active": active}
        )

    async def save_mailboxes(self, mailboxes: Sequence[tuple[str, int, str | None, bool]]) -> None:
        """:meth:`save_mailbox` of many ``(mailbox_id, version, profile_id, active)`` in one bulk write."""
        rows = [NewestRow(m, v, {"profile_id": p, "active": a}) for m, v, p, a in mailboxes]
        await newest_many(self.mailboxes, "version", rows)

    async def note_mailbox(self, mailbox_id: str, profile_id: str) -> bool:
        """A mailbox seen in a status event counts for its profile even if its creation was missed.

        True when it was not known before.
        """
        result = await self.mailboxes.update_one(
            {"_id": mailbox_id},
            {"$setOnInsert": {"profile_id": profile_id, "active": True, "version": 0}},
            upsert=True,
        )
        return result.upserted_id is not None

    async def profile_mailbox_ids(self, profile_id: str) -> list[str]:
        docs = await self.mailboxes.find({"profile_id": profile_id}, {"_id": 1}).to_list(None)
        return [str(d["_id"]) for d in docs]

    async def profile_mailbox_count(self, profile_id: str) -> int:
        return await self.mailboxes.count_documents({"profile_id": profile_id, "active": True})

    async def _versioned_upsert(
        self, coll: AsyncCollection[Document], _id: str, version: int, fields: Document
    ) -> None:
        try:
            await coll.update_one(
                {"_id": _id, "version": {"$lte": version}},
                {"$set": {**fields, "version": version}},
                upsert=True,
            )
        except DuplicateKeyError:
            pass  # a newer version is stored already
