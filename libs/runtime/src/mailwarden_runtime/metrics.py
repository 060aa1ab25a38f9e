"""Prometheus metrics every service exposes on ``/metrics``. No label carries a host, address or id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

EVENTS_HANDLED = Counter(
    "mailwarden_events_handled_total", "Events a consumer handled successfully", ["consumer"]
)
HANDLER_ERRORS = Counter(
    "mailwarden_handler_errors_total", "Handler failures that led to a retry or dead letter", ["consumer"]
)
DEAD_LETTERS = Counter(
    "mailwarden_dead_letters_total", "Messages sent to the dead-letter stream", ["consumer"]
)
OUTBOX_PUBLISHED = Counter("mailwarden_outbox_published_total", "Events published by the outbox relay")
OUTBOX_BACKLOG = Gauge("mailwarden_outbox_backlog", "Documents with events waiting in the outbox")
