"""Alerts for sync-svc's error episodes: MailboxSyncFailed opens one, MailboxSyncRecovered resolves it.

sync-svc publishes MailboxSyncFailed once per error episode (and again only when the code
changes), never on every poll, so each recipient gets one alert per episode: a code change counts
one more occurrence on the open alert and rewrites its text. The alert has its own kind and scope,
so the test-driven rules of :mod:`alert_svc.processor` neither count on it nor resolve it: a
successful re-test does not mean the sync went through, only MailboxSyncRecovered says that.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from alert_svc import texts
from alert_svc.domain import SYNC_FAILED, Draft, recipient_key
from alert_svc.metrics import ALERTS_RAISED
from alert_svc.readcache import ReadModelCache
from alert_svc.rules import OrgPolicy, allowed
from alert_svc.store.alert_writes import AlertStore
from alert_svc.store.episodes import EndedEpisodes
from alert_svc.store.wall import OpenFilter
from contracts.email import MailboxSyncFailed, MailboxSyncRecovered
from contracts.envelope import Envelope
from contracts.errors import CATALOG
from contracts.models import Direction, Owner

RECOVERED = "sync_recovered"


def episode_tag(episode_id: uuid.UUID) -> str:
    """The occurrence an episode's first failure counts as: what its recovery resolves by."""
    return f"sync:{episode_id}"


def sync_drafts(event: MailboxSyncFailed, policy: OrgPolicy, profile_name: str) -> list[Draft]:
    """One draft per recipient: the mailbox owner (when the org notifies owners) and the profile owner."""
    ref = event.mailbox
    err = event.error
    spec = CATALOG[err.code]
    title = f"Email is not being synchronized for the mailbox {ref.email}"
    retry = (
        f" The next attempt is at {texts.when(event.next_attempt_at)}; the alert is resolved once "
        "a sync goes through."
        if event.next_attempt_at
        else ""
    )
    message = (
        f"Synchronizing the {event.protocol.upper()} inbox of {ref.email} failed at the '{err.step}' step "
        f"since {texts.when(event.first_failed_at)}: {spec.message} (email server profile: {profile_name})."
        f"{retry}"
    )
    recipients: list[Owner] = [ref.owner] if policy.notify_mailbox_owner else []
    if recipient_key(ref.profile_owner) not in {recipient_key(o) for o in recipients}:
        recipients.append(ref.profile_owner)
    drafts = [
        Draft(
            who,
            "error",
            "sync",
            SYNC_FAILED,
            title,
            message,
            spec.remediation,
            profile_id=ref.profile_id,
            mailbox_id=ref.mailbox_id,
            mailbox_email=ref.email,
            direction=Direction.INCOMING,
        )
        for who in recipients
    ]
    return allowed(drafts, policy)


class SyncAlerts:
    """Handlers of the two sync events; every write is keyed on the episode, so a replay changes nothing."""

    def __init__(self, alerts: AlertStore, episodes: EndedEpisodes, cache: ReadModelCache) -> None:
        self.alerts = alerts
        self.episodes = episodes
        self.cache = cache

    async def failed(self, envelope: Envelope[MailboxSyncFailed]) -> None:
        event = envelope.data
        if await self.episodes.ended(str(event.episode_id)):
            return  # handled after its recovery: the episode is over, nothing to alert
        policy = await self.cache.policy()
        profile_name = await self.cache.profile_name(event.mailbox.profile_id)
        # A redelivery is a duplicate; a code change (a later failure count) one more occurrence.
        occurrence = episode_tag(event.episode_id)
        if event.failures > 1:
            occurrence += f":{event.failures}:{event.error.code.value}"
        for draft in sync_drafts(event, policy, profile_name):
            outcome = await self.alerts.raise_alert(draft, occurrence, None, envelope.occurred_at)
            ALERTS_RAISED.labels(level=draft.level, outcome=outcome).inc()
        if await self.episodes.ended(str(event.episode_id)):  # recovered while we wrote
            await self.resolve(event.mailbox.mailbox_id, event.episode_id, envelope.occurred_at)

    async def recovered(self, envelope: Envelope[MailboxSyncRecovered]) -> None:
        event = envelope.data
        # Ended first: a failed event of this episode handled from now on opens nothing.
        await self.episodes.end(str(event.episode_id), event.mailbox.mailbox_id, event.recovered_at)
        await self.resolve(event.mailbox.mailbox_id, event.episode_id, event.recovered_at)

    async def resolve(self, mailbox_id: str, episode_id: uuid.UUID, at: datetime) -> int:
        """The episode's open alerts (one per recipient); a later episode's stay open."""
        episode = OpenFilter(
            kind="sync", mailbox_id=mailbox_id, code=SYNC_FAILED, occurrence=episode_tag(episode_id)
        )
        return await self.alerts.resolve(episode, RECOVERED, at)
