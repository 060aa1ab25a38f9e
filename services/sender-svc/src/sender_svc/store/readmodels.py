"""What sender-svc decides from but does not own: mailboxes it may send through, profiles, settings.

They are the shared read model (:mod:`mailwarden_runtime.readmodels`, kept newest-version-wins by
``follow``, so redelivered or reordered events never move them back). The sender keeps two fields
of its own on those documents: on a mailbox's, the login its server last refused
(:class:`MailboxMarks`); on a profile's, the SIZE its outgoing server advertised
(:class:`ProfileMarks`). The shared model reads them back in ``model_extra``; they are typed here.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict
from pymongo.asynchronous.database import AsyncDatabase

from contracts.events import MailboxSnapshot, ProfileSnapshot
from mailwarden_runtime.documents import fields
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.readmodels import MAILBOXES, PROFILES, ReadModels


class _Marks(BaseModel):
    model_config = ConfigDict(extra="ignore")


class MailboxMarks(_Marks):
    """sender-svc's own field on a mailbox's read-model document."""

    login_failed: str | None = None
    """The identity (``submit.login_id``) of the login the server last refused."""


class ProfileMarks(_Marks):
    """sender-svc's own field on a profile's read-model document."""

    size_limit: int | None = None
    """The SIZE the profile's outgoing server advertised last (None: unknown or unlimited)."""


@dataclass(frozen=True)
class MailboxView:
    """What the sender knows about one mailbox."""

    snapshot: MailboxSnapshot | None
    enabled_outgoing: bool
    login_failed: str | None
    """The identity (``submit.login_id``) of the login the server last refused."""


class ReadModelStore:
    def __init__(self, db: AsyncDatabase[Document], cache_s: float = 0.0) -> None:
        # Mailboxes, profiles and org settings are read twice per mail: kept this long (a change
        # this process's consumers write, or a refused login it marks, drops the kept read at once).
        self.models = ReadModels(db, cache_s=cache_s)
        """Mailboxes, profiles and the org's settings, kept from events (``readmodels.follow``)."""
        self.mailboxes = self.models.mailboxes
        self.profiles = self.models.profiles

    async def mark_login_failed(self, mailbox_id: str, login_id: str) -> bool:
        """Remember that this login (by its identity) was refused: later sends with it fail without
        logging in. True the first time (the refusal is reported once per login)."""
        result = await self.mailboxes.update_one(
            {"_id": mailbox_id, "login_failed": {"$ne": login_id}},
            {"$set": fields(MailboxMarks, login_failed=login_id)},
        )
        self.models.forget(MAILBOXES, mailbox_id)
        return result.modified_count == 1

    async def mailbox(self, mailbox_id: str) -> MailboxView | None:
        entry = await self.models.get_mailbox(mailbox_id)
        if entry is None:
            return None
        marks = MailboxMarks.model_validate(entry.model_extra or {})
        return MailboxView(
            snapshot=entry.snapshot, enabled_outgoing=entry.enabled_outgoing, login_failed=marks.login_failed
        )

    async def profile(self, profile_id: str) -> tuple[ProfileSnapshot, int | None] | None:
        """The profile and the SIZE its outgoing server advertised last (None: unknown or unlimited)."""
        entry = await self.models.profile_entry(profile_id)
        if entry is None or entry.deleted or entry.snapshot is None:
            return None
        return entry.snapshot, ProfileMarks.model_validate(entry.model_extra or {}).size_limit

    async def remember_size(self, host: str, port: int, size: int | None) -> None:
        """The SIZE a server advertised, kept on the profiles sending through it, so the next
        submission can be refused before queueing."""
        await self.profiles.update_many(
            {"snapshot.outgoing.host": host, "snapshot.outgoing.port": port},
            {"$set": fields(ProfileMarks, size_limit=size)},
        )
        self.models.forget(PROFILES)
