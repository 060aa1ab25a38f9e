"""NATS and JetStream: the broker, the streams we rely on, and publishing envelopes exactly once.

Every event is published to JetStream with its envelope id as ``Nats-Msg-Id``, so a re-publish
(relay restart, redelivered handler) inside the duplicate window is dropped by the server.
"""

from __future__ import annotations

import logging
from typing import Any

from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from nats.aio.client import Client
from nats.js.api import DiscardPolicy, PubAck, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from contracts.envelope import Envelope
from contracts.subjects import DEAD_LETTER, STREAMS, StreamSpec
from mailwarden_runtime.settings import ServiceSettings

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 5.0
DAY_S = 86_400.0


def create_broker(settings: ServiceSettings, name: str) -> NatsBroker:
    """A broker that reconnects for ever: a NATS blip must never kill a service."""
    broker_log = logging.getLogger(f"{name}.broker")
    # FastStream narrates every task callback at INFO; keep its warnings unless we debug.
    broker_log.setLevel(max(logging.WARNING, logging.getLevelName(settings.log_level)))
    return NatsBroker(
        [u.strip() for u in settings.nats_url.split(",") if u.strip()],
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        graceful_timeout=20.0,
        logger=broker_log,
        middlewares=[NatsTelemetryMiddleware()],
        log_level=logging.DEBUG,
    )


def stream_config(spec: StreamSpec, settings: ServiceSettings) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        description=spec.description,
        storage=StorageType.FILE,
        num_replicas=settings.stream_replicas,
        duplicate_window=settings.dedupe_window_s,
        max_age=(30 if spec.subjects[0].startswith(DEAD_LETTER) else 14) * DAY_S,
        discard=DiscardPolicy.OLD,
    )


async def ensure_streams(nc: Client, settings: ServiceSettings) -> None:
    """Create our streams, or bring their configuration up to date. Safe to run from every service."""
    js = nc.jetstream()
    for spec in STREAMS:
        config = stream_config(spec, settings)
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            try:
                await js.add_stream(config)
                log.info("stream created", extra={"stream": spec.name})
                continue
            except BadRequestError:  # created by a sibling service in the meantime
                pass
        await js.update_stream(config)


async def publish_envelope(broker: NatsBroker, envelope: Envelope[Any], subject: str | None = None) -> PubAck:
    """Publish one event to JetStream and wait for the server's ack (raises when not stored)."""
    return await publish_raw(
        broker,
        subject or envelope.data.SUBJECT,
        str(envelope.id),
        envelope.to_bytes(),
        envelope.correlation_id,
    )


async def publish_raw(
    broker: NatsBroker, subject: str, event_id: str, body: bytes, correlation_id: str | None = None
) -> PubAck:
    """Publish an already serialised envelope (the outbox stores them as text)."""
    ack: PubAck = await broker.publish(
        body,
        subject,
        headers={"Nats-Msg-Id": event_id, "Content-Type": "application/json"},
        correlation_id=correlation_id,
        stream=_stream_for(subject),
        timeout=PUBLISH_TIMEOUT_S,
    )
    return ack


def _stream_for(subject: str) -> str:
    for spec in STREAMS:
        for pattern in spec.subjects:
            if subject.startswith(pattern.removesuffix(">")):
                return spec.name
    raise ValueError(f"no stream holds subject {subject!r}")
