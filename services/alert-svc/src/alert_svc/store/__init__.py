"""alert-svc's MongoDB access: one repository per aggregate, all on the service's database."""

from __future__ import annotations

from dataclasses import dataclass

from pymongo.asynchronous.database import AsyncDatabase

from alert_svc.store.alerts import ALERTS, OCCURRENCES, AlertStore
from alert_svc.store.failures import FailureStore
from alert_svc.store.readmodels import ReadModelStore
from alert_svc.store.recipients import PREFERENCES, EmailQueue, PreferenceStore
from alert_svc.store.webhooks import WEBHOOKS, WebhookStore
from mailwarden_runtime.mongo import Document

__all__ = ["ALERTS", "OUTBOX_COLLECTIONS", "Stores"]

# The alerts carry their AlertRaised; webhooks and preferences the changes people make to them.
OUTBOX_COLLECTIONS = (ALERTS, OCCURRENCES, WEBHOOKS, PREFERENCES)


@dataclass(frozen=True)
class Stores:
    alerts: AlertStore
    failures: FailureStore
    read_models: ReadModelStore
    preferences: PreferenceStore
    emails: EmailQueue
    webhooks: WebhookStore

    @classmethod
    def on(cls, db: AsyncDatabase[Document]) -> Stores:
        return cls(
            AlertStore(db),
            FailureStore(db),
            ReadModelStore(db),
            PreferenceStore(db),
            EmailQueue(db),
            WebhookStore(db),
        )

    async def ensure_indexes(self) -> None:
        await self.alerts.ensure_indexes()
        await self.read_models.ensure_indexes()
        await self.failures.ensure_indexes()
        await self.emails.ensure_indexes()
        await self.webhooks.ensure_indexes()
