"""alert-svc's MongoDB access: one repository per aggregate, all on the service's database.

The alerts: their documents (``alerts``), their writes (``alert_writes``), the repeats counted
as inserts (``occurrences``), the wall's reads and marks (``wall``) and the one-time migrations
(``migrations``); then the mailbox outcomes (``failures``), the read models (``readmodels``), the
recipients' preferences and mail queue (``recipients``), the webhooks (``webhooks``) and the ended
sync episodes (``episodes``).
"""

from __future__ import annotations

from dataclasses import dataclass

from pymongo.asynchronous.database import AsyncDatabase

from alert_svc.store.alert_writes import AlertStore
from alert_svc.store.alerts import ALERTS
from alert_svc.store.failures import FailureStore
from alert_svc.store.migrations import Migrations
from alert_svc.store.occurrences import OCCURRENCES, Occurrences
from alert_svc.store.readmodels import ReadModelStore
from alert_svc.store.recipients import PREFERENCES, EmailQueue, PreferenceStore
from alert_svc.store.wall import Wall
from alert_svc.store.webhooks import WEBHOOKS, WebhookStore
from mailwarden_runtime.mongo import Document

__all__ = ["ALERTS", "OUTBOX_COLLECTIONS", "Stores"]

# The alerts carry their AlertRaised; webhooks and preferences the changes people make to them.
OUTBOX_COLLECTIONS = (ALERTS, OCCURRENCES, WEBHOOKS, PREFERENCES)


@dataclass(frozen=True)
class Stores:
    alerts: AlertStore
    occurrences: Occurrences
    wall: Wall
    failures: FailureStore
    read_models: ReadModelStore
    preferences: PreferenceStore
    emails: EmailQueue
    webhooks: WebhookStore
    migrations: Migrations

    @classmethod
    def on(cls, db: AsyncDatabase[Document]) -> Stores:
        occurrences = Occurrences(db)
        return cls(
            AlertStore(db, occurrences),
            occurrences,
            Wall(db, occurrences),
            FailureStore(db),
            ReadModelStore(db),
            PreferenceStore(db),
            EmailQueue(db),
            WebhookStore(db),
            Migrations(db),
        )

    async def ensure_indexes(self) -> None:
        await self.alerts.ensure_indexes()
        await self.occurrences.ensure_indexes()
        await self.migrations.run()
        await self.read_models.ensure_indexes()
        await self.failures.ensure_indexes()
        await self.emails.ensure_indexes()
        await self.webhooks.ensure_indexes()
