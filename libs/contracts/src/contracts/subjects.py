"""Subject and stream names: every event lives under one prefix, grouped into streams by domain."""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "mailwarden"

PROFILE_CREATED = f"{PREFIX}.profile.created"
PROFILE_UPDATED = f"{PREFIX}.profile.updated"
PROFILE_DELETED = f"{PREFIX}.profile.deleted"
SETTINGS_CHANGED = f"{PREFIX}.settings.changed"
MAILBOX_CREATED = f"{PREFIX}.mailbox.created"
MAILBOX_UPDATED = f"{PREFIX}.mailbox.updated"
MAILBOX_APPROVED = f"{PREFIX}.mailbox.approved"
MAILBOX_STATUS_CHANGED = f"{PREFIX}.mailbox.status_changed"
TEST_REQUESTED = f"{PREFIX}.test.requested"
TEST_COMPLETED = f"{PREFIX}.test.completed"
JOBS = f"{PREFIX}.job"
EMAIL = f"{PREFIX}.email"
EMAIL_RECEIVED = f"{EMAIL}.received"
EMAIL_TRACKED = f"{EMAIL}.tracked"
EMAIL_REJECTED = f"{EMAIL}.rejected"
SYNC = f"{PREFIX}.sync"
SYNC_FAILED = f"{SYNC}.failed"
SYNC_RECOVERED = f"{SYNC}.recovered"
SYNC_PAUSED = f"{SYNC}.paused"
SYNC_RESYNC_REQUESTED = f"{SYNC}.resync_requested"
SEND = f"{PREFIX}.send"
SEND_REQUESTED = f"{SEND}.requested"
SEND_SENT = f"{SEND}.sent"
SEND_FAILED = f"{SEND}.failed"
SEND_UNCERTAIN = f"{SEND}.uncertain"
SEND_LOGIN_REFUSED = f"{SEND}.login_refused"
SEND_SENT_COPY = f"{SEND}.sent_copy"
TOKENS = f"{PREFIX}.tokens"
TOKEN_CREATED = f"{TOKENS}.created"
TOKEN_REVOKED = f"{TOKENS}.revoked"
KEYS_ROTATED = f"{PREFIX}.keys.rotated"
ALERTS = f"{PREFIX}.alerts"
CHANNELS = f"{PREFIX}.channels"
WEBHOOK_REGISTERED = f"{CHANNELS}.webhook_registered"
WEBHOOK_REMOVED = f"{CHANNELS}.webhook_removed"
PREFERENCES_CHANGED = f"{CHANNELS}.preferences_changed"
WALL = f"{PREFIX}.wall"
WALL_READ = f"{WALL}.read"
WALL_DELETED = f"{WALL}.deleted"
DEAD_LETTER = f"{PREFIX}.dlq"

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def is_subject_token(value: str) -> bool:
    """True when ``value`` can stand as one token of a NATS subject (no dots, spaces or wildcards)."""
    return bool(_TOKEN.match(value))


def alert_subject(recipient_kind: str, recipient_id: str, level: str) -> str:
    """Per-recipient alert subject: ``mailwarden.alerts.<kind>.<id>.<level>``.

    Subscribe to ``mailwarden.alerts.user.u42.>`` for one owner, or ``mailwarden.alerts.*.*.error``
    for every error alert.
    """
    for token in (recipient_kind, recipient_id, level):
        if not is_subject_token(token):
            raise ValueError(f"not a subject token: {token!r}")
    return f"{ALERTS}.{recipient_kind}.{recipient_id}.{level}"


def email_received_subject(mailbox_id: str) -> str:
    """``mailwarden.email.received.<mailbox id>``: subscribe to ``mailwarden.email.received.>`` for all."""
    if not is_subject_token(mailbox_id):
        raise ValueError(f"not a subject token: {mailbox_id!r}")
    return f"{EMAIL_RECEIVED}.{mailbox_id}"


def send_outcome_subject(outcome_subject: str, mailbox_id: str) -> str:
    """``mailwarden.send.<sent|failed|uncertain|sent_copy>.<mailbox id>``: ``mailwarden.send.*.<id>`` for one mailbox."""
    if not is_subject_token(mailbox_id):
        raise ValueError(f"not a subject token: {mailbox_id!r}")
    return f"{outcome_subject}.{mailbox_id}"


def dead_letter_subject(consumer: str) -> str:
    """Where a consumer parks the messages it cannot handle."""
    return f"{DEAD_LETTER}.{consumer}"


@dataclass(frozen=True)
class StreamSpec:
    """A JetStream stream the system relies on; created (or checked) by every service at start."""

    name: str
    subjects: tuple[str, ...]
    description: str


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(
        "MW_CONFIG",
        (
            f"{PREFIX}.profile.>",
            f"{PREFIX}.settings.>",
            f"{PREFIX}.mailbox.>",
            f"{CHANNELS}.>",
            f"{TOKENS}.>",
            KEYS_ROTATED,
        ),
        "Profile, settings, mailbox, alert channel (webhooks, preferences), API token and key rotation changes",
    ),
    StreamSpec(
        "MW_TESTS", (f"{PREFIX}.test.>", f"{PREFIX}.job.>"), "Test requests, results and bulk test jobs"
    ),
    StreamSpec(
        "MW_EMAIL",
        (f"{EMAIL_RECEIVED}.>", EMAIL_TRACKED, EMAIL_REJECTED, f"{SYNC}.>"),
        "Synchronized email (EmailReceived per mailbox), its feedback and the sync status of mailboxes",
    ),
    StreamSpec(
        "MW_SEND",
        (f"{SEND}.>",),
        "Outgoing email: SendEmailRequested, its outcome per mailbox (sent, failed, uncertain), refused logins",
    ),
    StreamSpec(
        "MW_ALERTS",
        (f"{ALERTS}.>", f"{WALL}.>"),
        "Alerts, one subject per recipient, and what people did on their walls (read, deleted)",
    ),
    StreamSpec("MW_DLQ", (f"{DEAD_LETTER}.>",), "Messages a consumer could not handle"),
)
