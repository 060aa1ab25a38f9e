"""Correlation ids and OpenTelemetry trace context that follow one operation across services.

The correlation id lives in a context variable: set from the ``X-Correlation-Id`` header of an HTTP
request or from the envelope of a consumed event, and stamped on every envelope created while it
is set and on every log line. The W3C ``traceparent`` travels in NATS headers (put there by every
publish, ``mailwarden_runtime.bus``, read by consumers and request-reply handlers) and is kept in
outbox entries, so a trace continues through the relay.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from contextvars import ContextVar

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

correlation_id: ContextVar[str | None] = ContextVar("mailwarden_correlation_id", default=None)
TRACER_NAME = "mailwarden"


def current_correlation_id() -> str | None:
    return correlation_id.get()


@contextlib.contextmanager
def correlated(value: str | None) -> Iterator[str]:
    """Run a block under a correlation id (a new one when ``value`` is empty)."""
    token = correlation_id.set(value or str(uuid.uuid4()))
    try:
        yield correlation_id.get() or ""
    finally:
        correlation_id.reset(token)


def carrier() -> dict[str, str]:
    """The current trace context as headers (empty when no span is active)."""
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


@contextlib.contextmanager
def attached(headers: dict[str, str] | None) -> Iterator[None]:
    """Make a stored trace context current, so spans started inside continue that trace."""
    if not headers:
        yield
        return
    token = otel_context.attach(propagate.extract(headers))
    try:
        yield
    finally:
        otel_context.detach(token)


def current_trace_id() -> str | None:
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def setup_exporter(service: str) -> bool:
    """Export spans over OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (the standard variable).

    Without it nothing is exported and tracing costs next to nothing; tests install their own provider.
    """
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True
