"""What alert-svc decides from but does not own: org policy, profiles, mailboxes per profile.

The organisation's settings and the profiles are the shared read model
(``mailwarden_runtime.readmodels``, kept by ``follow``: newest version wins, deleted profiles stay
tombstones). The mailboxes per profile (the majority alert's denominator) are alert-svc's own: the
shared model's mailbox entries also record every test's status, one more document write per test,
and alert-svc needs only each mailbox's profile and whether it is active.
"""

from __future__ import annotations

from collections.abc import Sequence

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from alert_svc.rules import OrgPolicy
from contracts.models import Owner
from mailwarden_runtime.documents import Stored, fields
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.readmodels import NewestRow, ReadModels, newest_many

MAILBOXES = "mailboxes"


class ProfileModel(Stored):
    """What alert-svc uses of a profile: its name for alert texts, the owner, the majority mail."""

    name: str | None = None
    owner: Owner | None = None
    majority_email: bool = False


class ProfileMailbox(Stored):
    """alert-svc's own entry of a mailbox (``_id`` the mailbox id): all a majority's count needs."""

    profile_id: str | None = None
    active: bool = True
    version: int = 0
    """The newest MailboxSnapshot version seen (0: only seen in a status event)."""


class ReadModelStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.models = ReadModels(db)
        """Profiles and the org's settings (``readmodels.follow`` keeps them; alert-svc caches reads)."""
        self.mailboxes: AsyncCollection[Document] = db[MAILBOXES]

    async def ensure_indexes(self) -> None:
        await self.mailboxes.create_index("profile_id")
        # Profiles alert-svc stored itself before it used the shared model have no snapshot and
        # would keep a replayed event of the same version out: dropped, the shared model's
        # consumers (new durables, reading MW_CONFIG from its start) store them again.
        await self.models.profiles.delete_many({"snapshot": {"$exists": False}, "deleted": {"$ne": True}})

    async def policy(self) -> OrgPolicy:
        settings = await self.models.get_settings()
        return OrgPolicy(frozenset(settings.alert_levels), settings.notify_mailbox_owner)

    async def profile(self, profile_id: str) -> ProfileModel | None:
        snapshot = await self.models.get_profile(profile_id)
        if snapshot is None:
            return None
        return ProfileModel(
            id=profile_id,
            name=snapshot.name,
            owner=snapshot.owner,
            majority_email=snapshot.advanced.email_alert_on_majority_failure,
        )

    async def save_mailbox(self, mailbox_id: str, version: int, profile_id: str | None, active: bool) -> None:
        """Keep the newest; an older version arriving late changes nothing."""
        try:
            await self.mailboxes.update_one(
                {"_id": mailbox_id, "version": {"$lte": version}},
                {"$set": fields(ProfileMailbox, profile_id=profile_id, active=active, version=version)},
                upsert=True,
            )
        except DuplicateKeyError:
            pass  # a newer version is stored already

    async def save_mailboxes(self, mailboxes: Sequence[tuple[str, int, str | None, bool]]) -> None:
        """:meth:`save_mailbox` of many ``(mailbox_id, version, profile_id, active)`` in one bulk write."""
        rows = [NewestRow(m, v, fields(ProfileMailbox, profile_id=p, active=a)) for m, v, p, a in mailboxes]
        await newest_many(self.mailboxes, "version", rows)

    async def note_mailbox(self, mailbox_id: str, profile_id: str) -> bool:
        """A mailbox seen in a status event counts for its profile even if its creation was missed.

        True when it was not known before.
        """
        result = await self.mailboxes.update_one(
            {"_id": mailbox_id},
            {"$setOnInsert": fields(ProfileMailbox, profile_id=profile_id, active=True, version=0)},
            upsert=True,
        )
        return result.upserted_id is not None

    async def profile_mailbox_ids(self, profile_id: str) -> list[str]:
        docs = await self.mailboxes.find({"profile_id": profile_id}, {"_id": 1}).to_list(None)
        return [str(d["_id"]) for d in docs]

    async def profile_mailbox_count(self, profile_id: str) -> int:
        return await self.mailboxes.count_documents({"profile_id": profile_id, "active": True})
