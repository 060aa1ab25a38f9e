"""Event handlers: the read models sync-svc decides from, each idempotent (newest version wins).

Mailboxes and profiles from their snapshots, org settings, a mailbox's incoming enablement from
MailboxStatusChanged. Logins are not kept here: the sync asks mailbox-svc for one when it
connects (:mod:`mailwarden_mailnet.use_login`).
Every change that matters wakes the worker.
"""

from __future__ import annotations

from collections.abc import Callable

from contracts.envelope import Envelope
from contracts.events import (
    EmailSettingsChanged,
    MailboxCreated,
    MailboxStatusChanged,
    MailboxUpdated,
    ProfileCreated,
    ProfileDeleted,
    ProfileUpdated,
)
from sync_svc.repository import Repository


class Handlers:
    def __init__(self, repo: Repository, wake: Callable[[], None]) -> None:
        self.repo = repo
        self.wake = wake

    async def profile_created(self, env: Envelope[ProfileCreated]) -> None:
        await self.repo.upsert_profile(env.data.profile)
        self.wake()

    async def profile_updated(self, env: Envelope[ProfileUpdated]) -> None:
        await self.repo.upsert_profile(env.data.profile)
        self.wake()

    async def profile_deleted(self, env: Envelope[ProfileDeleted]) -> None:
        await self.repo.delete_profile(env.data.profile_id)
        self.wake()

    async def settings_changed(self, env: Envelope[EmailSettingsChanged]) -> None:
        await self.repo.upsert_settings(env.data.settings)
        self.wake()

    async def mailbox_created(self, env: Envelope[MailboxCreated]) -> None:
        await self.repo.upsert_mailbox(env.data.mailbox)
        self.wake()

    async def mailbox_updated(self, env: Envelope[MailboxUpdated]) -> None:
        await self.repo.upsert_mailbox(env.data.mailbox)
        self.wake()

    async def status_changed(self, env: Envelope[MailboxStatusChanged]) -> None:
        await self.repo.set_enabled(env.data.mailbox.mailbox_id, env.data.enabled_incoming, env.occurred_at)
        self.wake()
