"""The mailbox-svc application: ``uvicorn --factory mailbox_svc.app:create_app``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from contracts.email import MailboxSyncFailed, MailboxSyncPaused
from contracts.envelope import Envelope
from contracts.events import Event, TestCompleted
from contracts.outgoing import MailboxSendLoginRefused
from mailbox_svc.api import Logins, serve_operations
from mailbox_svc.config import Settings
from mailbox_svc.handlers import Handlers
from mailbox_svc.jobs import JobRunner
from mailbox_svc.jobsweep import SweepScope
from mailbox_svc.keys import KeyRings
from mailbox_svc.operations import MailboxOperations
from mailbox_svc.policy import RetryPolicy
from mailbox_svc.profiles import ProfileDirectory
from mailbox_svc.retests import ScheduledRetests
from mailbox_svc.scheduler import RetryScheduler
from mailbox_svc.store import OUTBOX_COLLECTIONS, Stores
from mailbox_svc.testing import Rings
from mailwarden_runtime.auth import bearer_header
from mailwarden_runtime.auth.service_tokens import service_token
from mailwarden_runtime.consumer import ConsumerOptions
from mailwarden_runtime.readmodels import follow
from mailwarden_runtime.service import ServiceRuntime

NAME = "mailbox-svc"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    keys = KeyRings.load(settings)  # refuses to start without keys outside dev mode
    rings = Rings(at_rest=keys.at_rest, transit=keys.transit, transit_ttl_s=settings.transit_ttl_s)
    runtime = ServiceRuntime(NAME, settings, outbox_collections=OUTBOX_COLLECTIONS)
    stores = Stores.on(runtime.db)

    who = bearer_header(service_token(keys.transit, NAME))  # a service asking a service (auth.service_tokens)

    async def ask(subject: str, body: bytes, timeout_s: float) -> bytes:
        reply = await runtime.bus.connection.request(subject, body, timeout=timeout_s, headers=who)
        return bytes(reply.data)

    profiles = ProfileDirectory(stores.read, ask)

    def envelop(data: Event, correlation_id: str | None = None) -> Envelope[Any]:
        return runtime.envelope(data, correlation_id)

    async def apply_stored(job_id: str, profile_id: str, scope: SweepScope | None) -> int:
        return await handlers.apply_stored(job_id, profile_id, scope)  # the handlers are built below

    jobs = JobRunner(
        stores,
        rings,
        envelop,
        runtime.wake_relay,
        runtime.publish,
        runtime.instance,
        settings.job_batch_size,
        settings.job_max_in_flight,
        settings.scheduler_poll_s,
        profiles,
        apply_stored,
    )
    watchdog_s = settings.result_watchdog_s
    ops = MailboxOperations(
        stores,
        rings,
        envelop,
        runtime.wake_relay,
        settings.max_selection,
        profiles,
        result_watchdog_s=watchdog_s,
    )
    handlers = Handlers(
        stores,
        RetryPolicy(settings.retry_max_attempts, settings.retry_interval_s, settings.retry_jitter),
        envelop,
        runtime.wake_relay,
        jobs.count,
        on_job_taken=jobs.taken,
    )
    loop_args = (stores, rings, envelop, runtime.wake_relay, settings.scheduler_poll_s)
    scheduler = RetryScheduler(
        *loop_args,
        result_watchdog_s=watchdog_s,
        apply_result=handlers.apply_result,
        watchdog_resends=settings.result_watchdog_resends,
    )
    retests = ScheduledRetests(*loop_args, result_watchdog_s=watchdog_s)

    follow(runtime, stores.read, mailboxes=False)
    # Results of a job arrive in bursts: what is waiting (up to 64) is applied in one batch, three
    # database round trips instead of four per result (bench/README.md: the database is the bound).
    runtime.consume(
        TestCompleted,
        "mailbox-svc-tests",
        handlers.test_completed,
        ConsumerOptions(batch_size=64),
        batch_handler=handlers.test_completed_batch,
    )
    # sync-svc could not sync a mailbox: its incoming side is tested again (retry-or-disable, status, alerts).
    runtime.consume(MailboxSyncFailed, "mailbox-svc-sync-failed", ops.retest_incoming)
    # A paused sync no longer watches the mailbox: it is re-tested on the org's schedule instead.
    runtime.consume(MailboxSyncPaused, "mailbox-svc-sync-paused", retests.sync_paused)
    # sender-svc's SMTP server refused a login: its outgoing side is tested again (the same way).
    runtime.consume(MailboxSendLoginRefused, "mailbox-svc-send-login-refused", ops.retest_outgoing)
    routes = serve_operations(runtime, ops, jobs, keys.at_rest, Logins(profiles, rings, settings.login_ttl_s))

    async def start_background() -> None:
        await stores.ensure_indexes()
        jobs.start()
        scheduler.start()
        retests.start()

    async def stop_background() -> None:
        await retests.stop()
        await scheduler.stop()
        await jobs.stop()

    runtime.on_startup(start_background)
    runtime.on_shutdown(stop_background)
    app = runtime.http_app(title="mailwarden mailbox-svc", routers=[routes])
    app.state.operations = ops
    app.state.jobs = jobs
    app.state.scheduler = scheduler
    app.state.retests = retests
    app.state.stores = stores
    app.state.handlers = handlers
    return app
