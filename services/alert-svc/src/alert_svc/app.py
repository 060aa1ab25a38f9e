"""alert-svc: alert walls for mailbox and profile owners, with email digests and webhooks.

Run with ``uvicorn --factory alert_svc.app:create_app``.
"""

from __future__ import annotations

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
from alert_svc.store import ALERTS as ALERTS_COLLECTION
from alert_svc.store import Stores
from alert_svc.store.episodes import EndedEpisodes
from alert_svc.sync_alerts import SyncAlerts
from contracts.email import MailboxSyncFailed, MailboxSyncRecovered
from contracts.events import (
    AlertRaised,
    EmailSettingsChanged,
    MailboxCreated,
    MailboxStatusChanged,
    MailboxUpdated,
    ProfileCreated,
    ProfileDeleted,
    ProfileUpdated,
)
from contracts.subjects import ALERTS
from mailwarden_runtime.consumer import ConsumerOptions
from mailwarden_runtime.readmodels import MAILBOX_BATCH
from mailwarden_runtime.service import ServiceRuntime

NAME = "alert-svc"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    keys = settings.webhook_key_ring()  # refuses to start without keys outside dev mode
    runtime = ServiceRuntime(NAME, settings, outbox_collections=[ALERTS_COLLECTION])
    stores = Stores.on(runtime.db)
    cache = ReadModelCache(stores.read_models, settings.alert_read_model_ttl_s)
    processor = StatusProcessor(stores, settings, cache)
    read_models = ReadModelHandlers(stores.read_models, cache)
    email = EmailDigestWorker(stores.emails, settings)
    egress = webhook_egress(settings)
    webhooks = WebhookWorker(stores.webhooks, settings, keys, egress)
    enqueuer = ChannelEnqueuer(stores, settings, email, webhooks)

    async def on_status(envelope: object) -> None:
        await processor.handle(envelope)  # type: ignore[arg-type]
        runtime.wake_relay()

    # One worker: the processor's count-then-decide steps must not interleave (see StatusProcessor).
    runtime.consume(MailboxStatusChanged, "alert-svc-status", on_status, ConsumerOptions(max_workers=1))
    runtime.consume(EmailSettingsChanged, "alert-svc-settings", read_models.settings_changed)
    runtime.consume(ProfileCreated, "alert-svc-profiles", read_models.profile_saved)
    runtime.consume(ProfileUpdated, "alert-svc-profiles-updated", read_models.profile_saved)
    runtime.consume(ProfileDeleted, "alert-svc-profiles-deleted", read_models.profile_deleted)
    # A bulk set-up publishes thousands of these at once: each fetch is one bulk write.
    batched = ConsumerOptions(batch_size=MAILBOX_BATCH)
    saved, saved_many = read_models.mailbox_saved, read_models.mailboxes_saved
    runtime.consume(MailboxCreated, "alert-svc-mailboxes", saved, batched, batch_handler=saved_many)
    runtime.consume(MailboxUpdated, "alert-svc-mailboxes-updated", saved, batched, batch_handler=saved_many)
    sync_alerts = SyncAlerts(stores.alerts, EndedEpisodes(runtime.db), cache)
    one = ConsumerOptions(max_workers=1)  # a code change counts on the alert the first failure opened
    runtime.consume(MailboxSyncFailed, "alert-svc-sync-failed", sync_alerts.failed, one)
    runtime.consume(MailboxSyncRecovered, "alert-svc-sync-recovered", sync_alerts.recovered, one)
    runtime.consume(AlertRaised, "alert-svc-channels", enqueuer.handle, subject=f"{ALERTS}.>")

    ops = Operations(stores, keys, egress)
    routes = serve_operations(runtime, ops, settings)

    async def start_workers() -> None:
        await stores.ensure_indexes()
        email.start()
        webhooks.start()

    async def stop_workers() -> None:
        await email.stop()
        await webhooks.stop()

    runtime.on_startup(start_workers)
    runtime.on_shutdown(stop_workers)
    return runtime.http_app(title="mailwarden alert-svc", routers=[routes])
