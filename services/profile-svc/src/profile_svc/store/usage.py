"""Mailbox usage: which profile each mailbox is on, a read model fed by mailbox events (stored
per event batch by :class:`~mailwarden_runtime.mailboxuses.MailboxUses`)."""

from __future__ import annotations

from collections.abc import Sequence

from pymongo.asynchronous.database import AsyncDatabase

from mailwarden_runtime.mailboxuses import MAILBOX_USES, MailboxUse, MailboxUses
from mailwarden_runtime.mongo import Document

LEGACY_USAGE = "profile_usage"
"""One document per mailbox, before ``mailbox_uses``: moved in at start-up, then dropped."""


class UsageStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self.uses = MailboxUses(db[MAILBOX_USES])
        self._legacy_usage = db[LEGACY_USAGE]

    async def ensure_indexes(self) -> None:
        await self.uses.ensure_indexes()
        await self.uses.move_legacy(self._legacy_usage)

    async def record_usages(self, usages: Sequence[MailboxUse]) -> int:
        """Keep these mailbox events' profiles (one insert); a repeated event changes nothing."""
        return await self.uses.record(usages)

    async def usage_count(self, profile_id: str) -> int:
        """The mailboxes whose newest event puts them on this profile (deactivated ones too)."""
        return len(await self.uses.on_profile(profile_id))
