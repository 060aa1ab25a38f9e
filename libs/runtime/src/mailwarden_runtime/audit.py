"""The audit trail: who changed what and when, read from the events themselves.

Every change a caller asks for is published in an envelope that names its ``actor`` (the token's
subject), in the same database write as the change (the outbox), so the event streams are a
complete, tamper-evident record of changes for as long as the streams keep them (14 days by
default, ``max_age``). This reads them back with an ordered consumer per stream, newest first.

Every stream that holds events a caller causes is read, each only on the subjects where those
are (:data:`AUDITED`): a stream of synchronized email is not scanned message by message for the
few pauses among them.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from pydantic import BaseModel, Field

from contracts import subjects

AUDITED: tuple[tuple[str, str], ...] = (
    ("MW_CONFIG", ">"),  # profiles, settings, mailboxes, API tokens, webhooks and alert preferences
    ("MW_TESTS", ">"),  # tests and Test & Enable jobs asked for
    ("MW_EMAIL", f"{subjects.SYNC}.>"),  # sync pauses, resumes and resyncs (not the email itself)
    ("MW_SEND", f"{subjects.SEND}.>"),  # sends: their outcomes name who asked for them
    ("MW_ALERTS", f"{subjects.WALL}.>"),  # alerts marked read or deleted (not the alerts raised)
)
"""(stream, subject filter) pairs holding every event a caller causes."""
MAX_SCAN = 50_000


class AuditEntry(BaseModel):
    at: datetime
    actor: str
    event: str = Field(description="The event type, e.g. ProfileUpdated.")
    subject: str = Field(description="The NATS subject it was published on.")
    producer: str
    correlation_id: str
    ids: dict[str, str] = Field(description="The ids the event is about (profile_id, mailbox_id, ...).")


class AuditQuery(BaseModel):
    actor: str | None = Field(None, max_length=300, description="Only this actor (e.g. token:crm).")
    since_hours: float = Field(168.0, gt=0, le=24 * 90, description="How far back to look.")
    limit: int = Field(100, ge=1, le=1000)


class AuditPage(BaseModel):
    items: list[AuditEntry]


def _ids(data: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    if not isinstance(data, dict):
        return out
    for key, value in data.items():
        if key.endswith("_id") and isinstance(value, str):
            out[key] = value
        elif isinstance(value, dict):
            out.update({k: v for k, v in value.items() if k.endswith("_id") and isinstance(v, str)})
    return out


def entry_of(subject: str, raw: bytes) -> AuditEntry | None:
    try:
        env = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(env, dict) or not env.get("actor"):
        return None
    try:
        return AuditEntry(
            at=env["occurred_at"],
            actor=env["actor"],
            event=env["type"],
            subject=subject,
            producer=env["producer"],
            correlation_id=env["correlation_id"],
            ids=_ids(env.get("data")),
        )
    except (KeyError, ValueError):
        return None


async def audit_trail(nc: Client, q: AuditQuery, streams: tuple[tuple[str, str], ...] = AUDITED) -> AuditPage:
    """The newest ``q.limit`` changes by a caller; the streams are read side by side."""
    since = datetime.now(UTC) - timedelta(hours=q.since_hours)
    js = nc.jetstream(timeout=5)
    per_stream = await asyncio.gather(*(_read(js, stream, subject, since, q) for stream, subject in streams))
    found = [entry for entries in per_stream for entry in entries]
    found.sort(key=lambda e: e.at, reverse=True)
    return AuditPage(items=found[: q.limit])


async def _read(
    js: JetStreamContext, stream: str, subject: str, since: datetime, q: AuditQuery
) -> list[AuditEntry]:
    """The entries of one stream's ``subject`` since ``since`` (an ordered consumer, then gone)."""
    found: list[AuditEntry] = []
    sub = await js.subscribe(
        subject,
        stream=stream,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since),
    )
    try:
        for _ in range(MAX_SCAN):
            try:
                msg = await sub.next_msg(timeout=1.0)
            except (NatsTimeout, TimeoutError):
                break
            entry = entry_of(msg.subject, msg.data)
            if entry is not None and (q.actor is None or entry.actor == q.actor):
                found.append(entry)
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return found
