"""Durable JetStream consumers that never lose and never loop on a message.

One wrapper for every event handler in every service:

* the body is parsed into the expected event; an invalid one is dead-lettered once, with the
  field-level reason, and terminated (no redelivery loop);
* a handler that raises is retried with a delay (``nak``); past ``max_deliver`` attempts the
  message is dead-lettered and terminated, so a poison message stops, but is kept;
* a slow handler keeps its message with in-progress acks instead of being redelivered;
* if the dead-letter publish itself fails, the message is nak'd: it is never dropped;
* a handler that raises :class:`Redeliver` hands its message back at once (``nak`` without a
  delay), with no failure counted: e.g. the process is stopping before the work started.

Handlers must be idempotent: JetStream delivers at least once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry.trace import SpanKind

from contracts.envelope import Envelope, EnvelopeError, make_envelope, parse_envelope
from contracts.events import DeadLettered, Event, FieldError
from contracts.subjects import dead_letter_subject
from mailwarden_runtime import metrics
from mailwarden_runtime.bus import NatsBus, publish_envelope, stream_for
from mailwarden_runtime.pull import PullSpec, PullWorkers
from mailwarden_runtime.tracing import attached, correlated, tracer

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)
Handler = Callable[[Envelope[E]], Awaitable[None]]
BatchHandler = Callable[[Sequence[Envelope[E]]], Awaitable[None]]

MAX_KEPT_BODY = 64 * 1024


class PoisonMessage(Exception):
    """Raised by a handler for a message that can never succeed: dead-letter it at once."""

    def __init__(self, reason: str, errors: Sequence[FieldError] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.errors = list(errors)


class Redeliver(Exception):
    """Hand this message back now, without counting a failure: e.g. shutting down before the work started.

    The message is nak'd with no delay, so another process (or this one) takes it at once; no
    error metric, no retry delay. The server still counts the delivery towards ``max_deliver``.
    """


def dead_letter_record(
    consumer: str,
    subject: str,
    body: bytes,
    reason: str,
    deliveries: int,
    seq: int | None = None,
    errors: Sequence[FieldError] = (),
) -> DeadLettered:
    """What a dead letter keeps: who gave up, on what, why, and the body (up to 64 KiB)."""
    return DeadLettered(
        consumer=consumer,
        subject=subject,
        stream_seq=seq,
        deliveries=deliveries,
        reason=reason[:2000],
        errors=list(errors)[:50],
        body_b64=base64.b64encode(body[:MAX_KEPT_BODY]).decode(),
        body_size=len(body),
        truncated=len(body) > MAX_KEPT_BODY,
    )


@dataclass(frozen=True)
class ConsumerOptions:
    """How one durable consumer pulls and retries.

    ``max_workers`` 1 (the default) hands messages to the handler one at a time, in stream order.
    More workers handle messages concurrently, so only handlers that tolerate reordering (e.g.
    keyed on a test id) should ask for them. ``batch_size`` caps one fetch; a fetch never asks
    for more messages than there are free workers (see :mod:`mailwarden_runtime.pull`).
    """

    max_deliver: int = 8
    ack_wait_s: float = 30.0
    retry_delays_s: tuple[float, ...] = (1.0, 5.0, 15.0, 30.0, 60.0)
    batch_size: int = 1
    max_workers: int = 1
    max_ack_pending: int = 1000
    fetch_wait_s: float = 5.0


@dataclass
class EventConsumer(Generic[E]):
    """Binds one event type to one handler through one durable consumer."""

    bus: NatsBus
    event_cls: type[E]
    durable: str
    handler: Handler[E]
    producer: str
    options: ConsumerOptions = field(default_factory=ConsumerOptions)
    subject: str | None = None
    batch_handler: BatchHandler[E] | None = None

    def __post_init__(self) -> None:
        self._workers: PullWorkers | None = None

    @property
    def stream(self) -> str:
        return stream_for(self.subject or self.event_cls.SUBJECT)

    def consumer_config(self) -> ConsumerConfig:
        opts = self.options
        return ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=opts.ack_wait_s,
            # Our wrapper dead-letters at max_deliver; the server limit is only a backstop.
            max_deliver=opts.max_deliver + 2,
            max_ack_pending=opts.max_ack_pending,
        )

    async def start(self, nc: Client) -> None:
        opts = self.options
        spec = PullSpec(
            stream=self.stream,
            subject=self.subject or self.event_cls.SUBJECT,
            durable=self.durable,
            max_workers=opts.max_workers,
            batch_size=opts.batch_size,
            fetch_wait_s=opts.fetch_wait_s,
        )
        batch = self.on_batch if self.batch_handler is not None else None
        self._workers = PullWorkers(spec, self.consumer_config(), self.on_message, batch)
        await self._workers.start(nc)

    async def stop_pulling(self) -> None:
        """Fetch no more messages; handlers in flight go on (see :meth:`stop`)."""
        if self._workers is not None:
            await self._workers.stop_pulling()

    async def stop(self, grace_s: float) -> None:
        workers, self._workers = self._workers, None
        if workers is not None:
            await workers.stop(grace_s)

    async def on_message(self, msg: Msg) -> None:
        """Handle one message under the trace context it carries (a consumer span per message)."""
        with (
            attached(dict(msg.headers or {})),
            tracer().start_as_current_span(
                f"{self.durable} process",
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "nats",
                    "messaging.destination.name": msg.subject,
                    "messaging.consumer.group.name": self.durable,
                },
            ),
        ):
            await self._on_message(msg)

    async def on_batch(self, msgs: list[Msg]) -> None:
        """Hand first deliveries of valid events to the batch handler in one call, ack them together.

        Everything else takes the one-message path, which owns retries and dead letters: invalid
        bodies, redeliveries, and, if the batch handler raises, every message of the batch in
        turn (so batch handlers must be idempotent with their one-message twin).
        """
        assert self.batch_handler is not None
        batch: list[tuple[Msg, Envelope[E]]] = []
        single: list[Msg] = []
        for msg in msgs:
            try:
                envelope = parse_envelope(msg.data, self.event_cls)
            except EnvelopeError:
                single.append(msg)
                continue
            if (msg.metadata.num_delivered or 1) > 1:
                single.append(msg)
            else:
                batch.append((msg, envelope))
        if batch:
            keep_alive = [asyncio.create_task(self._keep_alive(m)) for m, _ in batch]
            try:
                with tracer().start_as_current_span(
                    f"{self.durable} process batch",
                    kind=SpanKind.CONSUMER,
                    attributes={"messaging.system": "nats", "messaging.batch.message_count": len(batch)},
                ):
                    await self.batch_handler([env for _, env in batch])
            except asyncio.CancelledError:
                for m, _ in batch:
                    with contextlib.suppress(Exception):
                        await m.nak()
                raise
            except Exception as exc:
                log.warning(
                    "batch handler failed; handling its messages one by one",
                    extra={"consumer": self.durable, "size": len(batch), "error": repr(exc)},
                )
                single = [m for m, _ in batch] + single
            else:
                now = datetime.now(UTC)
                for m, env in batch:
                    lag = (now - env.occurred_at).total_seconds()
                    metrics.EVENT_LAG.labels(consumer=self.durable).observe(max(lag, 0.0))
                    await self._settle(m, "ack")
                metrics.EVENTS_HANDLED.labels(consumer=self.durable).inc(len(batch))
            finally:
                for task in keep_alive:
                    task.cancel()
                await asyncio.gather(*keep_alive, return_exceptions=True)
        for msg in single:
            try:
                await self.on_message(msg)
            except asyncio.CancelledError:
                raise
            except Exception:  # one message's trouble never costs the rest of the batch
                log.exception("message handling failed", extra={"consumer": self.durable})

    async def _on_message(self, msg: Msg) -> None:
        meta = msg.metadata
        deliveries = meta.num_delivered or 1
        seq = meta.sequence.stream if meta.sequence else None
        try:
            envelope = parse_envelope(msg.data, self.event_cls)
        except EnvelopeError as exc:
            await self._dead_letter(msg, exc.reason, exc.errors, deliveries, seq)
            return
        lag = (datetime.now(UTC) - envelope.occurred_at).total_seconds()
        metrics.EVENT_LAG.labels(consumer=self.durable).observe(max(lag, 0.0))
        if deliveries > self.options.max_deliver:
            reason = f"delivered {deliveries} times without completing"
            await self._dead_letter(msg, reason, [], deliveries, seq)
            return
        keep_alive = asyncio.create_task(self._keep_alive(msg))
        try:
            with correlated(envelope.correlation_id):
                await self.handler(envelope)
        except asyncio.CancelledError:
            # Shutting down past the grace period: give the message back for another process.
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except Redeliver as exc:
            log.info(
                "handing the message back for redelivery",
                extra={"consumer": self.durable, "seq": seq, "reason": str(exc) or type(exc).__name__},
            )
            await self._settle(msg, "nak")
        except PoisonMessage as exc:
            await self._dead_letter(msg, exc.reason, exc.errors, deliveries, seq)
        except Exception as exc:
            metrics.HANDLER_ERRORS.labels(consumer=self.durable).inc()
            if deliveries >= self.options.max_deliver:
                reason = f"handler failed {deliveries} times: {type(exc).__name__}"
                log.exception("giving up on a message", extra={"consumer": self.durable, "seq": seq})
                await self._dead_letter(msg, reason, [], deliveries, seq)
            else:
                delays = self.options.retry_delays_s
                delay = delays[min(deliveries, len(delays)) - 1]
                log.warning(
                    "handler failed, will retry",
                    extra={"consumer": self.durable, "seq": seq, "retry_in_s": delay, "error": repr(exc)},
                )
                await self._settle(msg, "nak", delay)
        else:
            await self._settle(msg, "ack")
            metrics.EVENTS_HANDLED.labels(consumer=self.durable).inc()
        finally:
            keep_alive.cancel()
            # Its outcome does not matter (it may have failed on a message already acked): never raise it.
            await asyncio.gather(keep_alive, return_exceptions=True)

    async def _settle(self, msg: Msg, how: str, delay: float | None = None) -> None:
        """Ack or nak; a failure (already settled, connection gone) is logged, the message comes back anyway."""
        try:
            if how == "ack":
                await msg.ack()
            else:
                await msg.nak(delay=delay)
        except Exception as exc:
            log.warning(
                "could not %s a message; the server will redeliver it",
                how,
                extra={"consumer": self.durable, "error": repr(exc)},
            )

    async def _keep_alive(self, msg: Msg) -> None:
        """Tell the server we are still working, so a slow handler is not redelivered elsewhere.

        Ends by itself once the message is settled; a failed in-progress ack (reconnecting) is
        retried at the next beat.
        """
        interval = max(self.options.ack_wait_s / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            if msg._ackd:  # acked, nak'd or terminated meanwhile: nothing left to keep alive
                return
            try:
                await msg.in_progress()
            except Exception as exc:
                log.debug("in-progress ack failed: %r", exc, extra={"consumer": self.durable})

    async def _dead_letter(
        self,
        msg: Msg,
        reason: str,
        errors: Sequence[FieldError],
        deliveries: int,
        seq: int | None,
    ) -> None:
        record = dead_letter_record(
            self.durable, msg.subject, msg.data or b"", reason, deliveries, seq, errors
        )
        envelope = make_envelope(record, self.producer)
        try:
            await publish_envelope(self.bus, envelope, dead_letter_subject(self.durable))
        except Exception:
            log.exception("dead-letter publish failed; message kept for redelivery")
            await self._settle(msg, "nak", 5.0)
            return
        log.warning(
            "message dead-lettered",
            extra={"consumer": self.durable, "seq": seq, "reason": reason, "fields": [e.loc for e in errors]},
        )
        metrics.DEAD_LETTERS.labels(consumer=self.durable).inc()
        try:
            await msg.term()
        except Exception as exc:  # dead-lettered already; a redelivery would only repeat that
            log.warning("could not terminate a dead-lettered message: %r", exc)
