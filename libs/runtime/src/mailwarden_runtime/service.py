"""The shape every service shares: broker, database, outbox relay, HTTP app with health probes.

A service's ``create_app(settings)`` builds a :class:`ServiceRuntime`, registers its handlers and
routes on it, and returns ``runtime.http_app(...)``; nothing connects until the app starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Response
from faststream.nats import NatsBroker
from nats.js.api import PubAck
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from contracts.envelope import Envelope, make_envelope
from contracts.events import Event
from mailwarden_runtime import metrics
from mailwarden_runtime.bus import create_broker, ensure_streams, publish_envelope, publish_raw
from mailwarden_runtime.consumer import BatchHandler, ConsumerOptions, EventConsumer, Handler
from mailwarden_runtime.http import install_error_handlers
from mailwarden_runtime.logs import configure_logging
from mailwarden_runtime.mongo import Document, create_client, database, ping
from mailwarden_runtime.outbox import OutboxRelay
from mailwarden_runtime.rpc import register_rpc, rpc_subject
from mailwarden_runtime.settings import ServiceSettings
from mailwarden_runtime.tracing import current_correlation_id, setup_exporter
from mailwarden_runtime.web import CorrelationMiddleware

E = TypeVar("E", bound=Event)
Req = TypeVar("Req", bound=BaseModel)
Hook = Callable[[], Awaitable[None]]


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
        self.broker: NatsBroker = create_broker(settings, name)
        self.mongo: AsyncMongoClient[Document] | None = None
        self._db: AsyncDatabase[Document] | None = None
        if uses_database:
            self.mongo = create_client(settings, name)
            self._db = database(self.mongo, settings, name)
        collections = list(outbox_collections)
        self.relay: OutboxRelay | None = None
        if collections:
            self.relay = OutboxRelay(self.db, collections, self._publish_raw)
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
            broker=self.broker,
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

    def rpc(self, operation: str, model: type[Req], handler: Callable[[Req], Awaitable[Any]]) -> None:
        register_rpc(self.broker, rpc_subject(self.name, operation), model, handler, queue=self.name)

    def envelope(self, data: E, correlation_id: str | None = None) -> Envelope[E]:
        return make_envelope(data, self.name, correlation_id=correlation_id or current_correlation_id())

    async def publish(self, envelope: Envelope[Any], subject: str | None = None) -> PubAck:
        return await publish_envelope(self.broker, envelope, subject)

    async def _publish_raw(self, subject: str, event_id: str, body: bytes) -> PubAck:
        return await publish_raw(self.broker, subject, event_id, body)

    def wake_relay(self) -> None:
        if self.relay is not None:
            self.relay.wake()

    async def ready(self) -> dict[str, bool]:
        checks = {"nats": bool(self.broker.connection and self.broker.connection.is_connected)}
        if self.mongo is not None:
            checks["database"] = await ping(self.mongo)
        return checks

    async def start(self) -> None:
        if self.settings.log_setup:
            configure_logging(self.name, self.settings.log_level, self.settings.log_json)
            setup_exporter(self.name)
        if self.relay is not None:
            await self.relay.ensure_indexes()
        for hook in self._startup:
            await hook()
        await self.broker.connect()
        await ensure_streams(self.broker.connection, self.settings)
        await self.broker.start()
        for consumer in self._consumers:
            await consumer.start(self.broker.connection)
        if self.relay is not None:
            self.relay.start()
        if self._consumers:
            self._lag_task = asyncio.create_task(self._watch_pending(), name="consumer-pending")

    async def _watch_pending(self, every_s: float = 15.0) -> None:
        """Keep ``mailwarden_consumer_pending_messages`` current (a stalled consumer shows here)."""
        js = self.broker.connection.jetstream()
        while True:
            for consumer in self._consumers:
                with contextlib.suppress(Exception):
                    info = await js.consumer_info(consumer.stream, consumer.durable)
                    pending = (info.num_pending or 0) + (info.num_ack_pending or 0)
                    metrics.CONSUMER_PENDING.labels(consumer=consumer.durable).set(pending)
            await asyncio.sleep(every_s)

    async def stop(self) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_task
        # Stop pulling, tell handlers; those in flight get the grace period, the rest go back.
        await asyncio.gather(*(c.stop_pulling() for c in self._consumers), return_exceptions=True)
        for hook in self._stopping:
            with contextlib.suppress(Exception):
                await hook()
        grace = self.settings.shutdown_grace_s
        await asyncio.gather(*(c.stop(grace) for c in self._consumers), return_exceptions=True)
        for hook in reversed(self._shutdown):
            with contextlib.suppress(Exception):
                await hook()
        if self.relay is not None:
            await self.relay.stop()  # a last pass while the connection is still open
        await self.broker.stop()  # request-reply subscribers, then the connection
        if self.mongo is not None:
            await self.mongo.close()

    def http_app(self, title: str, routers: Iterable[APIRouter] = (), version: str = "0.1.0") -> FastAPI:
        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        app = FastAPI(title=title, version=version, lifespan=lifespan)
        app.state.runtime = self
        app.add_middleware(CorrelationMiddleware, service=self.name)
        install_error_handlers(app)
        app.include_router(self._ops_router())
        for router in routers:
            app.include_router(router)
        return app

    def _ops_router(self) -> APIRouter:
        router = APIRouter(tags=["operations"])

        @router.get("/healthz", summary="Liveness: the process is up (no dependency checks)")
        async def healthz() -> dict[str, str]:
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
