"""What alert-svc decides from but does not own: org policy, profiles, mailboxes per profile.

The organisation's settings and the profiles are the shared read model
(``mailwarden_runtime.readmodels``, kept by ``follow``: newest version wins, deleted profiles stay
tombstones). The mailboxes per profile (the majority alert's denominator) are alert-svc's own: the
shared model's mailbox entries also record every test's status, one more document write per test,
and alert-svc needs only each mailbox's profile and whether it is active. They are kept per batch
of mailbox events (``mailwarden_runtime.mailboxuses``): no document per mailbox.
"""

from __future__ import annotations

from collections.abc import Sequence

from pymongo.asynchronous.database import AsyncDatabase

from alert_svc.rules import OrgPolicy
from contracts.models import Owner
from mailwarden_runtime.documents import Stored
from mailwarden_runtime.mailboxuses import MAILBOX_USES, MailboxUse, MailboxUses
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.readmodels import ReadModels

LEGACY_MAILBOXES = "mailboxes"
"""One document per mailbox, before ``mailbox_uses``: moved in at start-up, then dropped."""


class ProfileModel(Stored):
    """What alert-svc uses of a profile: its name for alert texts, the owner, the majority mail."""

    name: str | None = None
    owner: Owner | None = None
    majority_email: bool = False


class ReadModelStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.models = ReadModels(db)
        """Profiles and the org's settings (``readmodels.follow`` keeps them; alert-svc caches reads)."""
        self.uses = MailboxUses(db[MAILBOX_USES])
        self._legacy_mailboxes = db[LEGACY_MAILBOXES]

    async def ensure_indexes(self) -> None:
        await self.uses.ensure_indexes()
        await self.uses.move_legacy(self._legacy_mailboxes)
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

    async def save_mailboxes(self, mailboxes: Sequence[MailboxUse]) -> None:
        """Keep these mailbox events (one insert); a repeated or late older one changes nothing."""
        await self.uses.record(mailboxes)

    async def note_mailbox(self, mailbox_id: str, profile_id: str) -> bool:
        """A mailbox seen in a status event counts for its profile even if its creation was missed.

        True when it was not known before.
        """
        return await self.uses.note(mailbox_id, profile_id)

    async def profile_mailbox_ids(self, profile_id: str) -> list[str]:
        return [u.mailbox_id for u in await self.uses.on_profile(profile_id)]

    async def profile_mailbox_count(self, profile_id: str) -> int:
        return len(await self.uses.on_profile(profile_id, active_only=True))
