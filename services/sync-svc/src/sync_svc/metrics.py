"""sync-svc's Prometheus metrics. Labels are bounded enums: never a host, address or mailbox."""

from __future__ import annotations

import functools

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter(
    "mailwarden_sync_messages_total",
    "Messages published as EmailReceived, by protocol and kind (ok, too_large, parse_error)",
    ["protocol", "kind"],
)
SKIPPED = Counter(
    "mailwarden_sync_messages_skipped_total",
    "Messages not published again, by reason (published_before, older_than_process_from)",
    ["reason"],
)
ERRORS = Counter("mailwarden_sync_errors_total", "Failed syncs, by error code", ["code"])
IDLE_SESSIONS = Gauge("mailwarden_sync_idle_sessions", "IMAP sessions idling (IDLE) in this process")
MAILBOXES = Gauge("mailwarden_sync_mailboxes", "Mailboxes this process synchronizes (leases held)")
LAG = Histogram(
    "mailwarden_sync_lag_seconds",
    "From the server receiving a message (IMAP INTERNALDATE) to its EmailReceived being published",
    buckets=(0.25, 0.5, 1, 2, 5, 15, 60, 300, 1800, 3600),
)
SYNC_SECONDS = Histogram(
    "mailwarden_sync_pass_seconds",
    "Duration of one sync pass (connect or wake-up to the last message published), by protocol",
    ["protocol"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


@functools.cache
def messages(protocol: str, kind: str) -> Counter:
    """MESSAGES' child for a label pair (``labels`` validates and locks on every call: per message)."""
    return MESSAGES.labels(protocol=protocol, kind=kind)
