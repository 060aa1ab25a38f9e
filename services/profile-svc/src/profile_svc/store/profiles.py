"""Profiles: the connection settings of a mailbox kind, their sealed logins, the default flag.

Every state change is one conditional single-document write carrying its events in the
in-document outbox, so no event goes out for a write that did not commit and none is lost for one
that did. Deleted profiles stay as tombstones (``live: false``) so their ProfileDeleted event can
ride on the delete itself; the unique name index covers live profiles only.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from contracts.models import Direction, SealedSecret
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.outbox import OutboxEntry, new_document_outbox, with_outbox
from profile_svc.documents import ProfileDoc, ProfileLogins

PROFILES = "profiles"


class NameTaken(Exception):
    """Another live profile already has this name."""


@dataclass(frozen=True)
class ProfileFilter:
    """Which live profiles a listing returns; every field left None matches all."""

    name_contains: str | None = None
    """Case-insensitive, anywhere in the name."""
    owner_id: str | None = None
    incoming_protocol: str | None = None
    credential_source: str | None = None
    ids: Sequence[str] | None = None
    """Only these profiles (empty: none)."""
    not_id: str | None = None

    def query(self) -> Document:
        query: Document = {"live": True}
        if self.name_contains:
            query["name"] = {"$regex": re.escape(self.name_contains), "$options": "i"}
        if self.owner_id:
            query["owner.id"] = self.owner_id
        if self.incoming_protocol:
            query["incoming_protocol"] = self.incoming_protocol
        if self.credential_source:
            query["credential_source"] = self.credential_source
        if self.ids is not None:
            query["_id"] = {"$in": list(self.ids)}
        elif self.not_id is not None:
            query["_id"] = {"$ne": self.not_id}
        return query


class ProfileStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._profiles = db[PROFILES]

    async def ensure_indexes(self) -> None:
        await self._profiles.create_indexes(
            [
                IndexModel(
                    [("name_key", ASCENDING)],
                    name="unique_live_name",
                    unique=True,
                    partialFilterExpression={"live": True},
                ),
                IndexModel([("live", ASCENDING), ("name_key", ASCENDING)], name="live_name"),
                IndexModel([("owner.id", ASCENDING)], name="owner_id"),
                IndexModel([("incoming_protocol", ASCENDING)], name="incoming_protocol"),
                IndexModel([("is_default", ASCENDING)], name="is_default"),
            ]
        )

    async def insert_profile(self, profile: ProfileDoc, entries: list[OutboxEntry]) -> None:
        try:
            await self._profiles.insert_one({**profile.stored(), **new_document_outbox(entries)})
        except DuplicateKeyError:
            raise NameTaken from None

    async def get_profile(self, profile_id: str) -> ProfileDoc | None:
        doc = await self._profiles.find_one({"_id": profile_id, "live": True}, {"outbox": 0})
        return None if doc is None else ProfileDoc.model_validate(doc)

    async def update_profile(
        self,
        new: ProfileDoc,
        version: int,
        changed: Collection[str],
        entries: list[OutboxEntry],
        unset: tuple[str, ...] = (),
    ) -> bool:
        """Write the ``changed`` fields of ``new`` if the profile is still at ``version``; False
        when it moved on (or is gone)."""
        update: Document = {"$set": new.stored(include=changed)}
        if unset:
            update["$unset"] = dict.fromkeys(unset, "")
        try:
            result = await self._profiles.update_one(
                {"_id": new.id, "live": True, "version": version}, with_outbox(update, entries)
            )
        except DuplicateKeyError:
            raise NameTaken from None
        return result.modified_count == 1

    async def with_credentials(self, after: str | None, limit: int) -> list[ProfileLogins]:
        """Profiles holding logins (live or not), by id: their ciphertexts, for key rotation."""
        q: Document = {"credentials": {"$exists": True, "$ne": {}}}
        if after is not None:
            q["_id"] = {"$gt": after}
        found = self._profiles.find(q, {"credentials": 1}).sort("_id", ASCENDING).limit(limit)
        return [ProfileLogins.model_validate(d) for d in await found.to_list(None)]

    async def swap_credentials(self, old: ProfileLogins, new: dict[Direction, SealedSecret]) -> bool:
        """Replace the ciphertexts only if nobody changed them meanwhile (rotation runs online)."""
        result = await self._profiles.update_one(
            {"_id": old.id, "credentials": old.stored()["credentials"]},
            {"$set": old.model_copy(update={"credentials": new}).stored(include={"credentials"})},
        )
        return result.modified_count == 1

    async def list_profiles(
        self, which: ProfileFilter, limit: int, offset: int
    ) -> tuple[list[ProfileDoc], int]:
        filt = which.query()
        total = await self._profiles.count_documents(filt)
        cursor = (
            self._profiles.find(filt, {"outbox": 0}).sort("name_key", ASCENDING).skip(offset).limit(limit)
        )
        return [ProfileDoc.model_validate(d) for d in await cursor.to_list(None)], total

    async def profiles_flagged_default(self) -> list[ProfileDoc]:
        found = self._profiles.find({"live": True, "is_default": True}, {"outbox": 0})
        return [ProfileDoc.model_validate(d) for d in await found.to_list(None)]

    async def profiles_outside(self, allowed: list[int], limit: int = 20) -> tuple[list[ProfileDoc], int]:
        """Live profiles with a port the allow-list does not contain."""
        filt = {
            "live": True,
            "$or": [{"incoming.port": {"$nin": allowed}}, {"outgoing.port": {"$nin": allowed}}],
        }
        total = await self._profiles.count_documents(filt)
        docs = (
            await self._profiles.find(filt, {"outbox": 0})
            .sort("name_key", ASCENDING)
            .limit(limit)
            .to_list(None)
        )
        return [ProfileDoc.model_validate(d) for d in docs], total
