"""Consumer of our own AlertRaised events: queue the email and webhook work each one needs.

Reading MW_ALERTS (not the alert write) is what makes channels independent: the alert is on the
wall and the subject first; a queue item is keyed on the event id, so a redelivery adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from alert_svc.channels.worker import PollingWorker
from alert_svc.config import Settings
from alert_svc.domain import PROFILE_MAJORITY_FAILURE, recipient_key, stable_id
from alert_svc.store import Stores
from alert_svc.store.recipients import EmailItem, PreferencesDoc
from alert_svc.store.webhooks import DeliveryDoc, WebhookDoc
from contracts.envelope import Envelope
from contracts.events import AlertRaised


class ChannelEnqueuer:
    def __init__(
        self, stores: Stores, settings: Settings, email: PollingWorker, webhooks: PollingWorker
    ) -> None:
        self.stores = stores
        self.settings = settings
        self.email_worker = email
        self.webhook_worker = webhooks

    async def handle(self, envelope: Envelope[AlertRaised]) -> None:
        await self.handle_batch([envelope])

    async def handle_batch(self, envelopes: Sequence[Envelope[AlertRaised]]) -> None:
        """What is waiting in one call: one read of the recipients' webhooks for all of them."""
        keys = list(dict.fromkeys(recipient_key(e.data.recipient) for e in envelopes))
        hooks = await self.stores.webhooks.webhooks_for_many(keys)
        for envelope in envelopes:
            await self._enqueue(envelope, hooks[recipient_key(envelope.data.recipient)])

    async def _enqueue(self, envelope: Envelope[AlertRaised], hooks: list[WebhookDoc]) -> None:
        alert = envelope.data
        event_id = str(envelope.id)
        now = datetime.now(UTC)
        key = recipient_key(alert.recipient)
        queued_hook = False
        for hook in hooks:
            if hook.levels and alert.level not in hook.levels:
                continue
            delivery = DeliveryDoc(
                id=stable_id("delivery", event_id, hook.id),
                webhook_id=hook.id,
                event_id=event_id,
                alert_id=alert.alert_id,
                body=envelope.model_dump_json(),
                created_at=now,
                next_attempt_at=now,
            )
            await self.stores.webhooks.enqueue_delivery(delivery)
            queued_hook = True
        if queued_hook:
            self.webhook_worker.wake()
        if await self._queue_email(alert, event_id, key, now):
            self.email_worker.wake()

    async def _queue_email(self, alert: AlertRaised, event_id: str, key: str, now: datetime) -> bool:
        """New alerts only (not repeats or resolutions), for the levels the recipient chose."""
        if not self.settings.alert_smtp_host or alert.state != "open" or alert.count != 1:
            return False
        prefs = await self.stores.preferences.preferences(key) or PreferencesDoc(id=key)
        address = prefs.email or alert.recipient.email
        levels = self.settings.alert_email_levels if prefs.email_levels is None else prefs.email_levels
        urgent = alert.code == PROFILE_MAJORITY_FAILURE and await self._profile_wants_mail(alert.profile_id)
        if not address or not (urgent or alert.level in levels):
            return False
        interval = timedelta(seconds=self.settings.alert_digest_interval_s)
        item = EmailItem(
            id=stable_id("email", event_id),
            recipient_key=key,
            address=address,
            recipient_name=alert.recipient.name,
            alert_id=alert.alert_id,
            level=alert.level,
            code=alert.code,
            title=alert.title,
            message=alert.message,
            remediation=alert.remediation,
            test_id=alert.test_id,
            urgent=urgent,
            created_at=now,
            due_at=now if urgent else now + interval,
        )
        await self.stores.emails.enqueue_email(item)
        return urgent

    async def _profile_wants_mail(self, profile_id: str | None) -> bool:
        profile = await self.stores.read_models.profile(profile_id) if profile_id else None
        return bool(profile and profile.majority_email)
