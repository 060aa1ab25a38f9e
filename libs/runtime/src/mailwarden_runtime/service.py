"""The shape every service shares: NATS, database, outbox relay, HTTP app with health probes.

A service's ``create_app(settings)`` builds a :class:`ServiceRuntime`, registers its handlers and
routes on it, and returns ``runtime.http_app(...)``; nothing connects until the app starts.

Stopping always ends: :meth:`ServiceRuntime.stop` has one deadline (``MW_SHUTDOWN_TIMEOUT_S``),
each of its steps is bounded within it, and a step that fails or hangs does not skip the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Literal, TypeVar, overload

from fastapi import APIRouter, FastAPI, Response
from nats.aio.client import Client
from nats.js.api import PubAck
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from contracts.envelope import Envelope, make_envelope
from contracts.events import Event
from mailwarden_runtime import metrics
from mailwarden_runtime.auth.authenticator import Authenticator
from mailwarden_runtime.auth.context import current_actor
from mailwarden_runtime.auth.guard import PUBLIC_PATHS, AuthMiddleware
from mailwarden_runtime.auth.settings import AuthSettings
from mailwarden_runtime.bounded import Deadline, cancel_and_wait, within
from mailwarden_runtime.bus import (
    NatsBus,
    ensure_streams,
    publish_envelope,
    publish_envelope_nowait,
    publish_envelopes_nowait,
    publish_raw,
)
from mailwarden_runtime.changes import ChangeStreamRelay, OwnWrites
from mailwarden_runtime.consumer import BatchHandler, ConsumerOptions, EventConsumer, Handler
from mailwarden_runtime.crypto import KeyRing, KeyRingError
from mailwarden_runtime.http import install_error_handlers
from mailwarden_runtime.keys import MissingKeyError, load_keyring
from mailwarden_runtime.logs import configure_logging
from mailwarden_runtime.mongo import Document, create_client, database, database_name, ping
from mailwarden_runtime.mongo import close as close_mongo
from mailwarden_runtime.outbox import OutboxRelay, use_change_stream
from mailwarden_runtime.rpc import Admit, RequestHeaders, RpcOperation, RpcServer, rpc_subject
from mailwarden_runtime.settings import ServiceSettings, TransitKeySettings
from mailwarden_runtime.tracing import current_correlation_id, setup_exporter
from mailwarden_runtime.web import CorrelationMiddleware

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)
Req = TypeVar("Req", bound=BaseModel)
Hook = Callable[[], Awaitable[None]]

# Bounds of the steps of a stop; each is also capped by what is left of MW_SHUTDOWN_TIMEOUT_S.
HOOK_S = 5.0  # one on_shutdown hook
STOPPING_HOOK_S = 1.0  # one on_stopping hook (they must be quick)
STOP_FETCHING_S = 3.0
CANCEL_WAIT_S = 2.0  # handlers cancelled after the grace give their messages back
RELAY_LAST_PASS_S = 3.0
NATS_CLOSE_S = 3.0
MONGO_CLOSE_S = 2.0
# Always kept for the last two steps, so NATS and the database are closed whatever came before.
CLOSING_S = NATS_CLOSE_S + MONGO_CLOSE_S


def _transit_ring(settings: ServiceSettings) -> KeyRing | None:
    """The transit ring, if this service has it: it checks the tokens of services that ask."""
    secret = getattr(settings, "transit_keys", None) or TransitKeySettings().transit_keys
    try:
        return load_keyring(secret, "MW_TRANSIT_KEYS", "transit", settings.dev_mode)
    except (MissingKeyError, KeyRingError):
        return None


def _name(hook: Hook) -> str:
    return getattr(hook, "__qualname__", repr(hook))


class ServiceRuntime:
    def __init__(
        self,
        name: str,
        settings: ServiceSettings,
        *,
        outbox_collections: Iterable[str] = (),
        uses_database: bool = True,
    ) -> None:
        self.name = name
        self.settings = settings
        self.instance = settings.instance or f"{socket.gethostname()}-{os.getpid()}"
        self.bus = NatsBus(settings, name)
        self.auth_settings = AuthSettings()
        self.authenticator = Authenticator.from_settings(
            self.auth_settings,
            self._nats_connection,
            replicas=settings.stream_replicas,
            service_ring=_transit_ring(settings),
        )
        self._rpc = RpcServer(queue=name, reply=self.bus.reply, concurrency=settings.rpc_concurrency)
        self.mongo: AsyncMongoClient[Document] | None = None
        self._db: AsyncDatabase[Document] | None = None
        self._outbox_collections = list(outbox_collections)
        if uses_database:
            # The service's own writes with events wake the change-stream relay (it does not tail).
            own_writes = OwnWrites(
                database_name(settings.mongodb_db, name), self._outbox_collections, self._wake_change_stream
            )
            self.mongo = create_client(settings, name, [own_writes] if self._outbox_collections else [])
            self._db = database(self.mongo, settings, name)
        # Chosen at start (MW_EVENT_RELAY): the change stream, or the outbox relay on a standalone.
        self.relay: OutboxRelay | ChangeStreamRelay | None = None
        self._consumers: list[EventConsumer[Any]] = []
        self._lag_task: asyncio.Task[None] | None = None
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []
        self._stopping: list[Hook] = []

    @property
    def db(self) -> AsyncDatabase[Document]:
        if self._db is None:
            raise RuntimeError(f"{self.name} has no database")
        return self._db

    @property
    def consumers(self) -> tuple[EventConsumer[Any], ...]:
        return tuple(self._consumers)

    def on_startup(self, hook: Hook) -> None:
        self._startup.append(hook)

    def on_shutdown(self, hook: Hook) -> None:
        self._shutdown.append(hook)

    def on_stopping(self, hook: Hook) -> None:
        """Tell handlers the process is stopping: ``hook`` runs as :meth:`stop` begins.

        It runs once no consumer fetches any more (so work given back now is not fetched again
        here) and before handlers in flight get their grace period: e.g. work that has not started
        yet can hand its message back at once (:class:`~mailwarden_runtime.consumer.Redeliver`).
        A hook must be quick; its errors are ignored.
        """
        self._stopping.append(hook)

    def consume(
        self,
        event_cls: type[E],
        durable: str,
        handler: Handler[E],
        options: ConsumerOptions | None = None,
        subject: str | None = None,
        batch_handler: BatchHandler[E] | None = None,
    ) -> EventConsumer[E]:
        """Handle ``event_cls`` through the durable consumer ``durable``.

        With ``batch_handler``, each fetch (up to ``options.batch_size`` messages) is handed to it
        in one call; ``handler`` stays the path for retries and for a batch that failed.
        """
        consumer = EventConsumer(
            bus=self.bus,
            event_cls=event_cls,
            durable=durable,
            handler=handler,
            producer=self.name,
            options=options or ConsumerOptions(),
            subject=subject,
            batch_handler=batch_handler,
        )
        self._consumers.append(consumer)
        return consumer

    def _nats_connection(self) -> Client | None:
        return self.bus.connection if self.bus.is_connected else None

    def public_paths(self) -> frozenset[str]:
        """HTTP paths served without a token: the probes (and /metrics when the operator says so)."""
        return PUBLIC_PATHS | ({"/metrics"} if self.auth_settings.public_metrics else set())

    @property
    def rpc_operations(self) -> tuple[RpcOperation, ...]:
        return self._rpc.operations

    @overload
    def rpc(
        self,
        operation: str,
        model: type[Req],
        handler: Callable[[Req], Awaitable[Any]],
        *,
        with_headers: Literal[False] = False,
        admit: Admit | None = None,
    ) -> None: ...

    @overload
    def rpc(
        self,
        operation: str,
        model: type[Req],
        handler: Callable[[Req, RequestHeaders], Awaitable[Any]],
        *,
        with_headers: Literal[True],
        admit: Admit | None = None,
    ) -> None: ...

    def rpc(
        self,
        operation: str,
        model: type[Req],
        handler: Callable[..., Awaitable[Any]],
        *,
        with_headers: bool = False,
        admit: Admit | None = None,
    ) -> None:
        """Serve ``operation`` on ``mailwarden.rpc.<service>.<operation>``; replicas share the requests.

        With ``with_headers=True`` the handler also gets the request's NATS headers (e.g. a token);
        ``admit`` checks the caller from those headers before the body is read.
        """

        async def handle(request: BaseModel, headers: RequestHeaders) -> Any:
            if with_headers:
                return await handler(request, headers)
            return await handler(request)

        summary = (inspect.getdoc(handler) or "").split("\n\n")[0].replace("\n", " ")
        try:
            returns = typing.get_type_hints(handler).get("return")
        except Exception:  # a closure over local names: documented as any JSON
            returns = None
        self._rpc.add(RpcOperation(rpc_subject(self.name, operation), model, handle, summary, returns, admit))

    def envelope(self, data: E, correlation_id: str | None = None) -> Envelope[E]:
        """An event of this service; ``actor`` names the caller whose request caused it (the audit)."""
        return make_envelope(
            data,
            self.name,
            correlation_id=correlation_id or current_correlation_id(),
            actor=current_actor(),
        )

    async def publish(self, envelope: Envelope[Any], subject: str | None = None) -> PubAck:
        return await publish_envelope(self.bus, envelope, subject)

    async def publish_nowait(
        self, envelope: Envelope[Any], subject: str | None = None
    ) -> asyncio.Future[PubAck]:
        """Send an event without waiting for its ack (the future); for batches awaited together."""
        return await publish_envelope_nowait(self.bus, envelope, subject)

    async def publish_batch_nowait(
        self, envelopes: Sequence[Envelope[Any]], subject: str
    ) -> list[asyncio.Future[PubAck]]:
        """Send events of one subject under one span, without waiting; their acks in order."""
        return await publish_envelopes_nowait(self.bus, envelopes, subject)

    async def _publish_raw(self, subject: str, event_id: str, body: bytes) -> PubAck:
        return await publish_raw(self.bus, subject, event_id, body)

    def wake_relay(self) -> None:
        if self.relay is not None:
            self.relay.wake()

    def _wake_change_stream(self) -> None:
        """The database client saw a write with events (the outbox relay wakes from its callers)."""
        if isinstance(self.relay, ChangeStreamRelay):
            self.relay.wake()

    async def ready(self) -> dict[str, bool]:
        checks = {"nats": self.bus.is_connected}
        if self.mongo is not None:
            checks["database"] = await ping(self.mongo)
        return checks

    async def start(self) -> None:
        if self.settings.log_setup:
            configure_logging(self.name, self.settings.log_level, self.settings.log_json)
            setup_exporter(self.name)
        legacy = await self._choose_relay()
        if self.relay is not None:
            await self.relay.ensure_indexes()
            if isinstance(self.relay, ChangeStreamRelay):
                await self.relay.prepare()  # before anything here writes events
        for hook in self._startup:
            await hook()
        nc = await self.bus.connect()
        await ensure_streams(nc, self.settings)
        if legacy is not None:
            # Events an earlier run left in the in-document outbox go out before the stream's.
            while await legacy.drain() >= legacy.batch:
                pass
        await self._rpc.start(nc)
        for consumer in self._consumers:
            await consumer.start(nc)
        if self.relay is not None:
            self.relay.start()
        if self._consumers:
            self._lag_task = asyncio.create_task(self._watch_pending(), name="consumer-pending")

    async def _choose_relay(self) -> OutboxRelay | None:
        """Pick the relay; in change-stream mode returns an outbox relay for what an outbox run left."""
        if not self._outbox_collections:
            return None
        mode = self.settings.event_relay
        if mode == "auto":
            hello = await self.db.client.admin.command("hello")
            mode = "change_stream" if hello.get("setName") else "outbox"
        name = f"{self.name}-outbox"
        outbox = OutboxRelay(self.db, self._outbox_collections, self._publish_raw, name=name)
        use_change_stream(mode == "change_stream")
        if mode == "outbox":
            self.relay = outbox
            return None
        self.relay = ChangeStreamRelay(self.db, self._outbox_collections, self._publish_raw, name=name)
        return outbox  # its start-up pass scans: no outbox indexes to keep up on every write

    async def _watch_pending(self, every_s: float = 15.0) -> None:
        """Keep ``mailwarden_consumer_pending_messages`` current (a stalled consumer shows here)."""
        js = self.bus.connection.jetstream()
        while True:
            for consumer in self._consumers:
                with contextlib.suppress(Exception):
                    info = await js.consumer_info(consumer.stream, consumer.durable)
                    pending = (info.num_pending or 0) + (info.num_ack_pending or 0)
                    metrics.CONSUMER_PENDING.labels(consumer=consumer.durable).set(pending)
            await asyncio.sleep(every_s)

    async def stop(self) -> None:
        """Stop within ``MW_SHUTDOWN_TIMEOUT_S`` whatever NATS and the database do.

        Order: stop fetching and taking requests; tell handlers (``on_stopping``); give handlers in
        flight the grace period (capped so the rest fits), then give back what still runs; the
        shutdown hooks; the relay's last pass (only when connected); close NATS (drain, else hard);
        close the database client, always. Every step is bounded; one that fails or hangs is logged
        and left behind, and the next one runs.
        """
        deadline = Deadline(self.settings.shutdown_timeout_s)
        try:
            await cancel_and_wait(self._lag_task, deadline.cap(1.0, keep_s=CLOSING_S))
            self._lag_task = None
            stop_fetching = asyncio.gather(
                *(c.stop_pulling() for c in self._consumers), self._rpc.stop_receiving()
            )
            await within(stop_fetching, deadline.cap(STOP_FETCHING_S, keep_s=CLOSING_S), "stop fetching")
            for hook in self._stopping:
                budget = deadline.cap(STOPPING_HOOK_S, keep_s=CLOSING_S)
                await within(hook(), budget, f"on_stopping {_name(hook)}")
            grace = deadline.cap(self.settings.shutdown_grace_s, keep_s=CLOSING_S + CANCEL_WAIT_S)
            handlers = asyncio.gather(*(c.stop(grace) for c in self._consumers), self._rpc.wait(grace))
            await within(handlers, deadline.cap(grace + CANCEL_WAIT_S, keep_s=CLOSING_S), "handlers' grace")
            for hook in reversed(self._shutdown):
                await within(hook(), deadline.cap(HOOK_S, keep_s=CLOSING_S), f"on_shutdown {_name(hook)}")
            if self.relay is not None:
                await within(self.relay.stop(), deadline.cap(1.0, keep_s=CLOSING_S), "stopping the relay")
                # A last pass, so a clean stop leaves nothing behind; not with a NATS that does not answer.
                if await self.bus.answers(deadline.cap(1.0, keep_s=CLOSING_S)):
                    budget = deadline.cap(RELAY_LAST_PASS_S, keep_s=CLOSING_S)
                    await within(self.relay.drain(), budget, "the outbox's last pass")
            budget = deadline.cap(NATS_CLOSE_S, keep_s=MONGO_CLOSE_S)
            await within(self.bus.close(max(budget - 1.0, 0.0)), budget, "closing NATS")
            await within(self.authenticator.close(), deadline.cap(1.0, keep_s=MONGO_CLOSE_S), "auth client")
        finally:
            if self.mongo is not None:
                budget = max(deadline.left(), 0.5)
                await within(close_mongo(self.mongo, min(budget, 1.0)), budget, "closing the database client")
            log.info("stopped", extra={"service": self.name, "left_s": round(deadline.left(), 1)})

    def http_app(self, title: str, routers: Iterable[APIRouter] = (), version: str = "0.1.0") -> FastAPI:
        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        # One path per route: a path that matches none is a 404, never a redirect to the path with
        # or without a trailing slash (``/mailboxes/%2F`` is ``/mailboxes/`` once decoded: Starlette's
        # default answered 307 to ``/mailboxes``, another resource, keeping the method and body).
        app = FastAPI(title=title, version=version, lifespan=lifespan, redirect_slashes=False)
        app.state.runtime = self
        # Every route but the public probes needs a valid token (401); each operation then checks
        # its permission in mailwarden_runtime.operations.authorize (403).
        app.add_middleware(AuthMiddleware, authenticator=lambda: self.authenticator, public=self.public_paths)
        app.add_middleware(CorrelationMiddleware, service=self.name)  # outermost: 401s carry an id too
        install_error_handlers(app)
        app.include_router(self._ops_router())
        for router in routers:
            app.include_router(router)
        return app

    def _ops_router(self) -> APIRouter:
        router = APIRouter(tags=["operations"])

        @router.get("/healthz", summary="Liveness: the process is up and its NATS client not closed for good")
        async def healthz(response: Response) -> dict[str, str]:
            if self.bus.lost is not None:  # nats-py gave up: only a restart brings the service back
                response.status_code = 503
                return {"status": "dead", "service": self.name, "reason": f"NATS closed: {self.bus.lost}"}
            return {"status": "ok", "service": self.name}

        @router.get("/readyz", summary="Readiness: NATS and the database answer")
        async def readyz(response: Response) -> dict[str, Any]:
            checks = await self.ready()
            ok = all(checks.values())
            response.status_code = 200 if ok else 503
            return {"status": "ready" if ok else "not ready", "checks": checks}

        @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
        async def metrics() -> Response:
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

        return router
