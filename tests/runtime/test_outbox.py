"""The in-document outbox against real servers: committed writes publish, in order, once."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contracts import DeadLettered, Envelope, MailboxApproved
from contracts.subjects import dead_letter_subject
from mailwarden_runtime import metrics
from mailwarden_runtime.outbox import (
    PENDING,
    SINCE,
    OutboxRelay,
    new_document_outbox,
    outbox_entry,
    use_change_stream,
    with_outbox,
)
from mailwarden_runtime.service import ServiceRuntime
from mailwarden_runtime.settings import ServiceSettings
from mailwarden_servers import eventually


@pytest.mark.parametrize("mode", ["outbox", "change_stream"])
async def test_relay_publishes_in_order_and_clears_the_outbox(
    nats_url: str, mongo_uri: str, mode: str
) -> None:
    settings = ServiceSettings(
        nats_url=nats_url,
        mongodb_uri=mongo_uri,
        mongodb_db=f"t_{uuid.uuid4().hex[:12]}",
        log_setup=False,
        event_relay=mode,
    )
    rt = ServiceRuntime("outbox-test", settings, outbox_collections=["things"])
    seen: list[str] = []
    tag = uuid.uuid4().hex[:8]

    async def handle(env: Envelope[MailboxApproved]) -> None:
        if env.data.email.startswith(tag):
            seen.append(env.data.mailbox_id)

    rt.consume(MailboxApproved, f"outbox-{tag}", handle)
    await rt.start()
    try:

        def event(n: int) -> Envelope[MailboxApproved]:
            return rt.envelope(
                MailboxApproved(mailbox_id=f"m{n}", email=f"{tag}@example.org", approved_at=datetime.now(UTC))
            )

        await rt.db.things.insert_one({"_id": "a", **new_document_outbox([outbox_entry(event(0))])})
        for n in range(1, 4):
            await rt.db.things.update_one(
                {"_id": "a"}, with_outbox({"$set": {"n": n}}, [outbox_entry(event(n))])
            )
        rt.wake_relay()
        await eventually(lambda: len(seen) >= 4, "the four events")
        doc = await rt.db.things.find_one({"_id": "a"})
        assert seen == ["m0", "m1", "m2", "m3"]
        assert doc is not None and "outbox_pending" not in doc and doc["n"] == 3
        if mode == "outbox":
            assert doc["outbox"] == [] and await rt.relay.drain() == 0 if rt.relay else False
        else:  # nothing written back: the document keeps the events of its last write
            assert [json.loads(e["body"])["data"]["mailbox_id"] for e in doc["outbox"]] == ["m3"]
    finally:
        await rt.stop()


@pytest.fixture
async def connected(nats_url: str, mongo_uri: str) -> AsyncIterator[ServiceRuntime]:
    """A runtime connected to NATS and the database, with no relay of its own (the test drives one)."""
    settings = ServiceSettings(
        nats_url=nats_url, mongodb_uri=mongo_uri, mongodb_db=f"t_{uuid.uuid4().hex[:12]}", log_setup=False
    )
    rt = ServiceRuntime("relay-test", settings)
    use_change_stream(False)  # these tests drive the outbox relay itself
    await rt.start()
    yield rt
    await rt.stop()


def relay_for(rt: ServiceRuntime, published: list[str], **options: Any) -> OutboxRelay:
    async def publish(subject: str, event_id: str, body: bytes) -> object:
        ack = await rt._publish_raw(subject, event_id, body)
        published.append(json.loads(body).get("data", {}).get("mailbox_id", subject))
        return ack

    return OutboxRelay(rt.db, ["things"], publish, name=f"relay-{uuid.uuid4().hex[:6]}", **options)


def approved_event(rt: ServiceRuntime, mailbox_id: str) -> Envelope[MailboxApproved]:
    return rt.envelope(
        MailboxApproved(mailbox_id=mailbox_id, email="r@example.org", approved_at=datetime.now(UTC))
    )


async def test_the_longest_waiting_document_goes_first(connected: ServiceRuntime) -> None:
    rt = connected
    published: list[str] = []
    relay = relay_for(rt, published, batch=1)
    await relay.ensure_indexes()
    await rt.db.things.insert_one(
        {"_id": "new", **new_document_outbox([outbox_entry(approved_event(rt, "new"))])}
    )
    old = new_document_outbox([outbox_entry(approved_event(rt, "old"))])
    old[SINCE] = datetime.now(UTC) - timedelta(hours=1)  # e.g. written while NATS was away
    await rt.db.things.insert_one({"_id": "old", **old})
    assert await relay.drain() == 1
    assert published == ["old"]
    await relay.drain()
    assert published == ["old", "new"]
    # A later event on a document keeps its older waiting time ($min): it stays ahead.
    await rt.db.things.insert_one(
        {"_id": "a", **new_document_outbox([outbox_entry(approved_event(rt, "a1"))])}
    )
    await rt.db.things.insert_one(
        {"_id": "b", **new_document_outbox([outbox_entry(approved_event(rt, "b1"))])}
    )
    await rt.db.things.update_one(
        {"_id": "a"}, with_outbox({"$set": {"x": 1}}, [outbox_entry(approved_event(rt, "a2"))])
    )
    await relay.drain()
    assert published[2:] == ["a1", "a2"]
    doc = await rt.db.things.find_one({"_id": "a"})
    assert doc is not None and PENDING not in doc and SINCE not in doc


async def test_an_entry_refused_again_and_again_is_dead_lettered_and_the_rest_goes_on(
    connected: ServiceRuntime,
) -> None:
    rt = connected
    published: list[str] = []
    relay = relay_for(rt, published, max_attempts=3)
    dead: list[DeadLettered] = []

    async def on_dead(env: Envelope[DeadLettered]) -> None:
        dead.append(env.data)

    listener = ServiceRuntime("dlq-listener", rt.settings, uses_database=False)
    listener.consume(DeadLettered, f"dlq-{relay.name}", on_dead, subject=dead_letter_subject(relay.name))
    await listener.start()
    try:
        refused = {"id": str(uuid.uuid4()), "subject": "mailwarden.nowhere.x", "body": "{}"}
        await rt.db.things.insert_one(
            {"_id": "p", **new_document_outbox([refused, outbox_entry(approved_event(rt, "after"))])}
        )
        await rt.db.things.insert_one(
            {"_id": "q", **new_document_outbox([outbox_entry(approved_event(rt, "q"))])}
        )
        for _ in range(2):
            with pytest.raises(ValueError, match="no stream"):
                await relay.drain()
        assert published == ["q"], "the other document went on the first pass"
        await relay.drain()  # the third refusal: dead-lettered, the entry behind it published
        assert published == ["q", dead_letter_subject(relay.name), "after"]
        doc = await rt.db.things.find_one({"_id": "p"})
        assert doc is not None and doc["outbox"] == [] and PENDING not in doc
        await eventually(lambda: len(dead) == 1, "the dead letter")
        assert dead[0].subject == "mailwarden.nowhere.x" and dead[0].deliveries == 3
        assert "refused 3 times" in dead[0].reason
    finally:
        await listener.stop()


async def test_the_backlog_gauge_counts_past_the_batch(connected: ServiceRuntime) -> None:
    rt = connected
    published: list[str] = []
    relay = relay_for(rt, published, batch=2)
    for n in range(5):
        await rt.db.things.insert_one(
            {"_id": f"d{n}", **new_document_outbox([outbox_entry(approved_event(rt, f"d{n}"))])}
        )
    await relay.drain()
    assert metrics.OUTBOX_BACKLOG._value.get() == 3
    await relay.drain()
    assert metrics.OUTBOX_BACKLOG._value.get() == 1
    await relay.drain()
    assert metrics.OUTBOX_BACKLOG._value.get() == 0
    assert sorted(published) == [f"d{n}" for n in range(5)]
