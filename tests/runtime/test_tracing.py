"""One trace and one correlation id from an HTTP request, through the outbox, to another service."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
from fastapi import APIRouter
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from contracts import Envelope, MailboxApproved
from mailwarden_runtime.auth import bearer_header
from mailwarden_runtime.auth.bootstrap import issue_token
from mailwarden_runtime.outbox import new_document_outbox, outbox_entry
from mailwarden_runtime.service import ServiceRuntime
from mailwarden_runtime.settings import ServiceSettings
from mailwarden_runtime.tracing import current_trace_id
from mailwarden_servers import eventually


def install_memory_exporter() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


async def test_trace_and_correlation_cross_the_outbox_and_the_bus(nats_url: str, mongo_uri: str) -> None:
    exporter = install_memory_exporter()
    db = f"t_{uuid.uuid4().hex[:12]}"
    tag = uuid.uuid4().hex[:8]

    def settings() -> ServiceSettings:
        return ServiceSettings(nats_url=nats_url, mongodb_uri=mongo_uri, mongodb_db=db, log_setup=False)

    producer = ServiceRuntime("producer-svc", settings(), outbox_collections=["things"])
    token = await issue_token(nats_url)
    consumer = ServiceRuntime("consumer-svc", settings(), uses_database=False)
    received: list[tuple[str, str | None]] = []

    async def handle(env: Envelope[MailboxApproved]) -> None:
        if env.data.email.startswith(tag):
            received.append((env.correlation_id, current_trace_id()))

    consumer.consume(MailboxApproved, f"trace-{tag}", handle)
    router = APIRouter()

    @router.post("/things")
    async def create() -> dict[str, str | None]:
        env = producer.envelope(
            MailboxApproved(mailbox_id="m1", email=f"{tag}@example.org", approved_at=datetime.now(UTC))
        )
        await producer.db.things.insert_one({"_id": tag, **new_document_outbox([outbox_entry(env)])})
        producer.wake_relay()
        return {"trace_id": current_trace_id()}

    app = producer.http_app("mailwarden producer-svc", [router])
    await consumer.start()
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://p") as http,
        ):
            resp = await http.post(
                "/things", headers={"X-Correlation-Id": f"corr-{tag}", **bearer_header(token)}
            )
            assert resp.status_code == 200 and resp.headers["x-correlation-id"] == f"corr-{tag}"
            trace_id = resp.json()["trace_id"]
            await eventually(lambda: received, "the event at the consumer")
    finally:
        await consumer.stop()
    assert received == [(f"corr-{tag}", trace_id)]
    assert trace_id is not None
    spans = [s for s in exporter.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]
    assert {s.kind for s in spans} >= {
        trace.SpanKind.SERVER,
        trace.SpanKind.PRODUCER,
        trace.SpanKind.CONSUMER,
    }


async def test_a_batch_of_events_goes_out_under_one_span_each_with_its_own_id(nats_url: str) -> None:
    """publish_batch_nowait: one producer span for the batch, every message stored with its own
    Nats-Msg-Id (a second send of the same events is dropped as duplicates) and the batch's trace."""
    exporter = install_memory_exporter()
    tag = uuid.uuid4().hex[:8]
    runtime = ServiceRuntime(
        "producer-svc", ServiceSettings(nats_url=nats_url, log_setup=False), uses_database=False
    )
    await runtime.start()
    try:
        envelopes = [
            runtime.envelope(
                MailboxApproved(
                    mailbox_id=f"m{i}", email=f"{tag}-{i}@example.org", approved_at=datetime.now(UTC)
                )
            )
            for i in range(5)
        ]
        acks = await runtime.publish_batch_nowait(envelopes, MailboxApproved.SUBJECT)
        stored = [await ack for ack in acks]
        assert not any(a.duplicate for a in stored)
        again = [await ack for ack in await runtime.publish_batch_nowait(envelopes, MailboxApproved.SUBJECT)]
        assert all(a.duplicate for a in again)
        assert [a.seq for a in again] == [a.seq for a in stored]
        js = runtime.bus.connection.jetstream()
        traces: set[tuple[str, ...]] = set()
        for env, ack in zip(envelopes, stored, strict=True):
            msg = await js.get_msg(ack.stream, ack.seq)
            headers = msg.headers or {}
            assert headers["Nats-Msg-Id"] == str(env.id) and headers["correlation_id"] == env.correlation_id
            assert Envelope[MailboxApproved].model_validate_json(msg.data or b"") == env
            traces.add(tuple(headers["traceparent"].split("-")[1:3]))
        spans = [s for s in exporter.get_finished_spans() if s.name == f"{MailboxApproved.SUBJECT} publish"]
        batch_spans = [s for s in spans if (s.attributes or {}).get("messaging.batch.message_count") == 5]
        assert len(batch_spans) == 2
        first = batch_spans[0].context
        assert traces == {(f"{first.trace_id:032x}", f"{first.span_id:016x}")}
    finally:
        await runtime.stop()
