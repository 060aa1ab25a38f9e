"""sender-svc: other systems send mail through a mailbox, once, with a classified outcome.

Run: ``uvicorn --factory sender_svc.app:create_app``. Requests come as SendEmailRequested events,
over HTTP (``POST /sends``) and request-reply (``mailwarden.rpc.sender-svc.send``).
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from nats.aio.client import Client

from contracts.envelope import Envelope, make_envelope
from contracts.events import Event
from contracts.outgoing import SendEmailRequested
from mailwarden_mailnet.resolve import Resolver, SystemResolver
from mailwarden_mailnet.use_login import LoginSource
from mailwarden_runtime.auth import bearer_header
from mailwarden_runtime.auth.service_tokens import service_token
from mailwarden_runtime.consumer import ConsumerOptions
from mailwarden_runtime.keys import load_keyring
from mailwarden_runtime.readmodels import follow
from mailwarden_runtime.service import ServiceRuntime
from sender_svc.api import serve_operations
from sender_svc.attachments import ObjectAttachments
from sender_svc.config import Settings
from sender_svc.handlers import Handlers
from sender_svc.limits import shared_limits
from sender_svc.outbound import Outbound
from sender_svc.sender import Sender
from sender_svc.sent_copy import SentCopies
from sender_svc.store import OUTBOX_COLLECTIONS, Stores
from sender_svc.submit import Submission

NAME = "sender-svc"


def create_app(settings: Settings | None = None, *, resolver: Resolver | None = None) -> FastAPI:
    settings = settings or Settings()
    keyring = load_keyring(settings.transit_keys, "MW_TRANSIT_KEYS", "transit", settings.dev_mode)
    runtime = ServiceRuntime(NAME, settings, outbox_collections=OUTBOX_COLLECTIONS)
    stores = Stores.on(runtime.db, settings.sender_read_cache_s)

    def connection() -> Client:
        return runtime.bus.connection

    def runtime_connection() -> Client | None:
        return runtime.bus.connection if runtime.bus.is_connected else None

    def envelop(
        data: Event, correlation_id: str | None, event_id: uuid.UUID, actor: str | None
    ) -> Envelope[Any]:
        """A send's event names who asked for the send as its actor (the audit)."""
        return make_envelope(data, NAME, correlation_id=correlation_id, event_id=event_id, actor=actor)

    who = bearer_header(service_token(keyring, NAME))  # a service asking a service (auth.service_tokens)

    async def ask(subject: str, body: bytes, timeout_s: float) -> bytes:
        reply = await runtime.bus.connection.request(subject, body, timeout=timeout_s, headers=who)
        return bytes(reply.data)

    attachments = ObjectAttachments(connection, settings.attachment_buckets)
    shared = shared_limits(runtime_connection, keyring, settings) if settings.sender_shared_limits else None
    out = Outbound.build(
        settings, stores, attachments, envelop, runtime.wake_relay, resolver or SystemResolver()
    )
    sender = Sender(
        out, LoginSource(ask, keyring, purpose="send", direction="outgoing"), runtime.instance, shared
    )
    # The Sent-folder copy: the mailbox's incoming login, for purpose sent_copy only (mailbox-svc
    # gives it only while the profile's save_sent_copy is on).
    copies = SentCopies(out, LoginSource(ask, keyring, purpose="sent_copy", direction="incoming"))
    sender.copy_sent = copies.offer
    submission = Submission(
        stores,
        attachments,
        settings.sender_max_message_bytes,
        sender.offer,
        lambda: datetime.now(UTC),
        runtime.instance,
        min(settings.sender_hold_s, settings.sender_lease_s),
    )
    handlers = Handlers(submission, runtime.publish, NAME)

    follow(runtime, stores.read.models)
    runtime.consume(
        SendEmailRequested,
        "sender-svc-requests",
        handlers.send_requested,
        ConsumerOptions(max_workers=4, batch_size=100),
        batch_handler=handlers.send_requested_many,  # one insert per fetch
    )
    routes = serve_operations(runtime, submission, stores.sends)

    async def start_sending() -> None:
        await stores.ensure_indexes()

    async def after_connect() -> None:
        if shared is not None:
            await shared.kv.open_at_start()  # KV down: each process's own limits meanwhile
        await attachments.ensure(settings.sender_attachment_max_age_days * 86400, settings.stream_replicas)
        sender.start()
        copies.start()

    async def stopping() -> None:
        sender.stopping()

    async def stop_sending() -> None:
        # Within the runtime's 5 s shutdown hook; a send cut after DATA is reported uncertain later.
        await sender.stop(min(settings.shutdown_grace_s, 4.0))
        await copies.stop()  # a copy cut short stays pending: the next process makes it

    runtime.on_startup(start_sending)
    runtime.on_stopping(stopping)
    runtime.on_shutdown(stop_sending)
    app = runtime.http_app(title="mailwarden sender-svc", routers=[routes])
    _start_after_connect(app, after_connect)
    app.state.stores = stores
    app.state.sender = sender
    app.state.copies = copies
    app.state.submission = submission
    app.state.handlers = handlers
    return app


def _start_after_connect(app: FastAPI, hook: Any) -> None:
    """Start sending once NATS is connected (the runtime's startup hooks run before it connects)."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(application: FastAPI) -> Any:
        async with inner(application):
            await hook()
            yield

    app.router.lifespan_context = lifespan
