"""alert-svc: alert walls for mailbox and profile owners, with email digests and webhooks.

Run with ``uvicorn --factory alert_svc.app:create_app``.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI

from alert_svc.api import serve_operations
from alert_svc.channels.email import EmailDigestWorker
from alert_svc.channels.enqueue import ChannelEnqueuer
from alert_svc.channels.webhook import WebhookWorker, webhook_egress
from alert_svc.config import Settings
from alert_svc.handlers import ReadModelHandlers
from alert_svc.operations import Operations
from alert_svc.processor import StatusProcessor
from alert_svc.readcache import ReadModelCache
from alert_svc.retention import OccurrenceRetention
from alert_svc.store import OUTBOX_COLLECTIONS, Stores
from alert_svc.store.episodes import EndedEpisodes
from alert_svc.sync_alerts import SyncAlerts
from contracts.email import MailboxSyncFailed, MailboxSyncRecovered
from contracts.envelope import Envelope
from contracts.events import AlertRaised, MailboxCreated, MailboxStatusChanged, MailboxUpdated
from contracts.subjects import ALERTS
from mailwarden_runtime.consumer import ConsumerOptions
from mailwarden_runtime.readmodels import MAILBOX_BATCH, follow
from mailwarden_runtime.service import ServiceRuntime

NAME = "alert-svc"
STATUS_BATCH = 64


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    keys = settings.webhook_key_ring()  # refuses to start without keys outside dev mode
    runtime = ServiceRuntime(NAME, settings, outbox_collections=OUTBOX_COLLECTIONS)
    stores = Stores.on(runtime.db)
    cache = ReadModelCache(stores.read_models, settings.alert_read_model_ttl_s)
    processor = StatusProcessor(stores, settings, cache)
    read_models = ReadModelHandlers(stores.read_models, cache)
    email = EmailDigestWorker(stores.emails, settings)
    egress = webhook_egress(settings)
    webhooks = WebhookWorker(stores.webhooks, settings, keys, egress)
    enqueuer = ChannelEnqueuer(stores, settings, email, webhooks)

    async def on_status(envelope: Envelope[MailboxStatusChanged]) -> None:
        await processor.handle(envelope)
        runtime.wake_relay()

    async def on_statuses(envelopes: Sequence[Envelope[MailboxStatusChanged]]) -> None:
        await processor.handle_batch(envelopes)
        runtime.wake_relay()

    # One worker: the processor's count-then-decide steps must not interleave (see StatusProcessor);
    # what is waiting (up to 64) is handled as one batch (a job's results come in bursts).
    runtime.consume(
        MailboxStatusChanged,
        "alert-svc-status",
        on_status,
        ConsumerOptions(max_workers=1, batch_size=STATUS_BATCH),
        batch_handler=on_statuses,
    )
    # Profiles and the org's settings: the shared read model (alert-svc-profile-created, ...-settings).
    follow(runtime, stores.read_models.models, mailboxes=False, after=read_models.shared_changed)
    # A bulk set-up publishes thousands of these at once: each fetch is one bulk write.
    batched = ConsumerOptions(batch_size=MAILBOX_BATCH)
    saved, saved_many = read_models.mailbox_saved, read_models.mailboxes_saved
    runtime.consume(MailboxCreated, "alert-svc-mailboxes", saved, batched, batch_handler=saved_many)
    runtime.consume(MailboxUpdated, "alert-svc-mailboxes-updated", saved, batched, batch_handler=saved_many)
    sync_alerts = SyncAlerts(stores.alerts, EndedEpisodes(runtime.db), cache)
    one = ConsumerOptions(max_workers=1)  # a code change counts on the alert the first failure opened
    runtime.consume(MailboxSyncFailed, "alert-svc-sync-failed", sync_alerts.failed, one)
    runtime.consume(MailboxSyncRecovered, "alert-svc-sync-recovered", sync_alerts.recovered, one)
    # Every published alert: what is waiting (up to 64) in one call, one read of the webhooks.
    runtime.consume(
        AlertRaised,
        "alert-svc-channels",
        enqueuer.handle,
        ConsumerOptions(batch_size=STATUS_BATCH),
        subject=f"{ALERTS}.>",
        batch_handler=enqueuer.handle_batch,
    )

    retention = OccurrenceRetention(stores.occurrences, settings.alert_occurrence_sweep_s)
    ops = Operations(stores, keys, egress, runtime.envelope, runtime.wake_relay)
    routes = serve_operations(runtime, ops, settings)

    async def start_workers() -> None:
        await stores.ensure_indexes()
        email.start()
        webhooks.start()
        retention.start()

    async def stop_workers() -> None:
        await email.stop()
        await webhooks.stop()
        await retention.stop()

    runtime.on_startup(start_workers)
    runtime.on_shutdown(stop_workers)
    return runtime.http_app(title="mailwarden alert-svc", routers=[routes])
