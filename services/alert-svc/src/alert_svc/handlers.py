"""Event handlers: the read models alert-svc keeps (org settings, profiles, mailbox counts)."""

from __future__ import annotations

from collections.abc import Sequence

from alert_svc.readcache import ReadModelCache
from alert_svc.store.readmodels import ReadModelStore
from contracts.envelope import Envelope
from contracts.events import (
    EmailSettingsChanged,
    MailboxCreated,
    MailboxUpdated,
    ProfileCreated,
    ProfileDeleted,
    ProfileUpdated,
)


class ReadModelHandlers:
    """Each handler makes ``cache`` forget what it changed, after the write."""

    def __init__(self, repo: ReadModelStore, cache: ReadModelCache) -> None:
        self.repo = repo
        self.cache = cache

    async def settings_changed(self, envelope: Envelope[EmailSettingsChanged]) -> None:
        await self.repo.save_settings(envelope.data.settings)
        self.cache.forget_policy()

    async def profile_saved(self, envelope: Envelope[ProfileCreated] | Envelope[ProfileUpdated]) -> None:
        p = envelope.data.profile
        await self.repo.save_profile(
            p.profile_id,
            p.version,
            {
                "name": p.name,
                "owner": p.owner.model_dump(mode="json"),
                "majority_email": p.advanced.email_alert_on_majority_failure,
            },
        )
        self.cache.forget_profile(p.profile_id)

    async def profile_deleted(self, envelope: Envelope[ProfileDeleted]) -> None:
        await self.repo.delete_profile(envelope.data.profile_id)
        self.cache.forget_profile(envelope.data.profile_id)

    async def mailbox_saved(self, envelope: Envelope[MailboxCreated] | Envelope[MailboxUpdated]) -> None:
        m = envelope.data.mailbox
        await self.repo.save_mailbox(m.mailbox_id, m.version, m.profile_id, m.active)
        self.cache.mailbox_saved(m.mailbox_id)

    async def mailboxes_saved(
        self, envelopes: Sequence[Envelope[MailboxCreated]] | Sequence[Envelope[MailboxUpdated]]
    ) -> None:
        """Many at once (a bulk set-up publishes thousands): one bulk write."""
        shots = [e.data.mailbox for e in envelopes]
        await self.repo.save_mailboxes([(m.mailbox_id, m.version, m.profile_id, m.active) for m in shots])
        for m in shots:
            self.cache.mailbox_saved(m.mailbox_id)
