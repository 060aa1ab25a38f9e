"""sync-svc: synchronizes the INBOX of enabled mailboxes into EmailReceived events.

Run: ``uvicorn --factory sync_svc.app:create_app``. Scales out: every process runs the same
worker, and leases in NATS KV decide which process syncs which mailbox.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import gc
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from nats.aio.client import Client
from nats.js.api import PubAck

from contracts.email import EmailRejected, EmailTracked, MailboxResyncRequested, MailboxSyncPaused
from contracts.envelope import Envelope
from mailwarden_mailnet.resolve import Resolver, SystemResolver
from mailwarden_mailnet.tls import TlsContexts
from mailwarden_mailnet.use_login import LoginSource
from mailwarden_mailnet.wire import Limits
from mailwarden_runtime.auth import bearer_header
from mailwarden_runtime.auth.service_tokens import service_token
from mailwarden_runtime.crypto import KeyRing
from mailwarden_runtime.hostleases import HostLeases
from mailwarden_runtime.keys import load_keyring
from mailwarden_runtime.readmodels import follow
from mailwarden_runtime.service import ServiceRuntime
from mailwarden_runtime.sharedkv import BucketSpec, KeyHasher, SharedKv, limits_key
from sync_svc.api import serve_operations
from sync_svc.config import Settings
from sync_svc.connect import NetEnv
from sync_svc.episodes import Episodes
from sync_svc.feedback import Rejected, Tracked
from sync_svc.hosts import HostSlots
from sync_svc.leases import LeaseTable
from sync_svc.legacy import move_published
from sync_svc.operations import Operations
from sync_svc.publisher import Publisher
from sync_svc.rawstore import RawStore
from sync_svc.session import Services, SyncOptions
from sync_svc.store import Stores
from sync_svc.undeliverable import Undeliverable
from sync_svc.worker import Worker

NAME = "sync-svc"
HOSTS_BUCKET = "MW_SYNC_HOSTS"
HOSTS_KEY_LABEL = b"mailwarden sync-svc host leases v1"
SESSION_BYTES = 4_194_304  # budget of a session's own replies (greeting, listings); FETCH budgets per message


def host_leases(
    settings: Settings, keyring: KeyRing, connection: Callable[[], Client | None]
) -> HostLeases | None:
    """The shared per-host limit (a KV lease per session), unless turned off."""
    if not settings.sync_shared_host_limits:
        return None
    ttl = settings.sync_host_lease_ttl_s
    bucket = BucketSpec(HOSTS_BUCKET, max(3600.0, ttl * 4), "sync-svc: connection leases per host")
    kv = SharedKv(
        connection, [bucket], replicas=settings.stream_replicas, timeout_s=settings.sync_kv_timeout_s
    )
    return HostLeases(kv, KeyHasher(limits_key(keyring, HOSTS_KEY_LABEL)), ttl, HOSTS_BUCKET)


def young_collections(objects: int) -> None:
    """Collect the youngest generation every ``objects`` new containers (0: Python's default).

    A sync holds hundreds of parsed messages in flight: with Python's 700 they are walked again
    at every young collection, promoted, and every tenth young collection walks the middle
    generation and eventually the whole heap (0.1-0.3 ms per message, bench/README.md). What
    dies young is freed by reference counting anyway; only cycles wait longer."""
    if objects:
        _, middle, old = gc.get_threshold()
        gc.set_threshold(objects, middle, old)


def create_app(settings: Settings | None = None, *, resolver: Resolver | None = None) -> FastAPI:
    settings = settings or Settings()
    # Thousands of idling TLS sessions: asyncio's per-connection read buffer is the main cost of each.
    asyncio.sslproto.SSLProtocol.max_size = settings.sync_tls_read_kb * 1024
    young_collections(settings.sync_gc_young_objects)
    keyring = load_keyring(settings.transit_keys, "MW_TRANSIT_KEYS", "transit", settings.dev_mode)
    runtime = ServiceRuntime(NAME, settings)
    stores = Stores.on(runtime.db)

    def connection() -> Client | None:
        with contextlib.suppress(Exception):  # not connected yet
            return runtime.bus.connection
        return None

    async def publish(envelope: Envelope[Any], subject: str) -> None:
        await runtime.publish(envelope, subject)

    async def send(envelopes: list[Envelope[Any]], subject: str) -> list[asyncio.Future[PubAck]]:
        return await runtime.publish_batch_nowait(envelopes, subject)

    who = bearer_header(service_token(keyring, NAME))  # a service asking a service (auth.service_tokens)

    async def ask(subject: str, body: bytes, timeout_s: float) -> bytes:
        reply = await runtime.bus.connection.request(subject, body, timeout=timeout_s, headers=who)
        return bytes(reply.data)

    env = NetEnv(
        resolver=resolver or SystemResolver(),
        tls=TlsContexts(settings.sync_ca_file),
        allow_networks=settings.allow_networks,
        step_timeout_s=settings.sync_step_timeout_s,
        dns_timeout_s=settings.sync_dns_timeout_s,
        limits=Limits(settings.sync_max_line_bytes, SESSION_BYTES),
    )
    raw = RawStore(
        connection, settings.sync_raw_bucket, settings.sync_raw_max_age_days, settings.stream_replicas
    )
    services = Services(
        stores=stores,
        env=env,
        keyring=keyring,
        logins=LoginSource(ask, keyring, purpose="sync", direction="incoming"),
        publisher=Publisher(raw, send, NAME, settings.sync_preview_chars),
        episodes=Episodes(
            stores.states, publish, NAME, settings.sync_retry_base_s, settings.sync_retry_max_s
        ),
        hosts=HostSlots(host_leases(settings, keyring, connection)),
        options=SyncOptions(
            fetch_batch=settings.sync_fetch_batch,
            fetch_window=settings.sync_fetch_window,
            first_window=settings.sync_first_window,
            max_message_bytes=settings.sync_max_message_bytes,
            idle=settings.sync_idle,
            idle_renew_s=settings.sync_idle_renew_s,
            poll_jitter=settings.sync_poll_jitter,
        ),
    )
    leases = LeaseTable(
        connection, runtime.instance, settings.sync_lease_ttl_s, replicas=settings.stream_replicas
    )
    worker = Worker(
        services,
        leases,
        reconcile_s=settings.sync_reconcile_s,
        poll_floor_s=settings.sync_poll_floor_s,
        max_mailboxes=settings.sync_max_sessions,
    )

    async def read_model_changed(changed: bool) -> None:
        if changed:
            worker.changed()  # it bumps the revision once per reload: the other workers re-read then

    follow(runtime, stores.read, after=read_model_changed)
    undeliverable = Undeliverable(services, lambda: worker.targets)
    runtime.consume(EmailTracked, "sync-svc-tracked", Tracked(stores.answers))
    runtime.consume(EmailRejected, "sync-svc-rejected", Rejected(stores.answers, undeliverable))

    async def announce(event: MailboxSyncPaused | MailboxResyncRequested) -> None:
        await publish(runtime.envelope(event), event.SUBJECT)

    ops = Operations(stores, lambda: set(worker.targets), worker.wake, announce)
    routes = serve_operations(runtime, ops)

    async def start_worker() -> None:
        await stores.ensure_indexes()
        await move_published(runtime.db, stores)  # the ledger of an older version, before anything reads it
        worker.start()

    runtime.on_startup(start_worker)
    runtime.on_shutdown(services.hosts.close)  # hooks run last first: after the worker stopped
    runtime.on_shutdown(worker.stop)  # cancels the sessions, then gives the leases back (KV round trips)
    app = runtime.http_app(title="mailwarden sync-svc", routers=[routes])
    app.state.worker = worker
    app.state.stores = stores
    app.state.raw = raw
    return app
