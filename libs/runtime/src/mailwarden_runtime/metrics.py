"""Prometheus metrics every service exposes on ``/metrics``. No label carries a host, address or id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
EVENT_RELAY_LAG = Gauge(
    "mailwarden_event_relay_lag_seconds", "Age of the last change the change-stream relay published"
)
OUTBOX_BACKLOG = Gauge("mailwarden_outbox_backlog", "Documents with events waiting in the outbox")
EVENT_LAG = Histogram(
    "mailwarden_event_lag_seconds",
    "Time from an event's occurred_at to the start of its handling (queue lag)",
    ["consumer"],
    buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800),
)
CONSUMER_PENDING = Gauge(
    "mailwarden_consumer_pending_messages",
    "Messages a durable consumer has not yet been given or not yet acknowledged",
    ["consumer"],
)
