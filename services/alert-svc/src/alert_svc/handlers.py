"""Event handlers: the mailboxes per profile alert-svc keeps (profiles and settings: ``readmodels.follow``)."""

from __future__ import annotations

from collections.abc import Sequence

from alert_svc.readcache import ReadModelCache
from alert_svc.store.readmodels import ReadModelStore
from contracts.envelope import Envelope
from contracts.events import MailboxCreated, MailboxUpdated
from mailwarden_runtime.mailboxuses import MailboxUse


class ReadModelHandlers:
    """Each handler makes ``cache`` forget what it changed, after the write."""

    def __init__(self, repo: ReadModelStore, cache: ReadModelCache) -> None:
        self.repo = repo
        self.cache = cache

    async def shared_changed(self, changed: bool) -> None:
        """A profile or the settings changed in the shared read model (rare): forget both."""
        if changed:
            self.cache.forget_policy()
            self.cache.forget_profiles()

    async def mailbox_saved(self, envelope: Envelope[MailboxCreated] | Envelope[MailboxUpdated]) -> None:
        m = envelope.data.mailbox
        await self.repo.save_mailboxes([MailboxUse.of(m)])
        self.cache.mailbox_saved(m.mailbox_id)

    async def mailboxes_saved(
        self, envelopes: Sequence[Envelope[MailboxCreated]] | Sequence[Envelope[MailboxUpdated]]
    ) -> None:
        """Many at once (a bulk set-up publishes thousands): one insert."""
        shots = [e.data.mailbox for e in envelopes]
        await self.repo.save_mailboxes([MailboxUse.of(m) for m in shots])
        for m in shots:
            self.cache.mailbox_saved(m.mailbox_id)
