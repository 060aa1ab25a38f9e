"""Events from the change stream against real servers: no write-back, nothing lost across a restart."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient, UpdateOne, monitoring

from contracts import DeadLettered, Envelope, MailboxApproved
from contracts.subjects import dead_letter_subject
from mailwarden_runtime.bus import NatsBus, publish_raw
from mailwarden_runtime.changes import (
    POSITIONS,
    ChangeStreamRelay,
    OwnWrites,
    events_pipeline,
    stored_position,
    unpublished,
)
from mailwarden_runtime.outbox import new_document_outbox, outbox_entry, use_change_stream, with_outbox
from mailwarden_runtime.service import ServiceRuntime
from mailwarden_runtime.settings import ServiceSettings
from mailwarden_servers import eventually


def settings_for(nats_url: str, mongo_uri: str, db: str, mode: str = "change_stream") -> ServiceSettings:
    return ServiceSettings(
        nats_url=nats_url, mongodb_uri=mongo_uri, mongodb_db=db, log_setup=False, event_relay=mode
    )


class Seen:
    """A consumer of MailboxApproved that keeps the mailbox ids of one test's events, in order."""

    def __init__(self, nats_url: str, mongo_uri: str, tag: str) -> None:
        self.ids: list[str] = []
        self.tag = tag
        s = settings_for(nats_url, mongo_uri, f"t_{uuid.uuid4().hex[:12]}")
        self.rt = ServiceRuntime(f"seen-{tag}", s, uses_database=False)
        self.rt.consume(MailboxApproved, f"changes-{tag}", self._handle)

    async def _handle(self, env: Envelope[MailboxApproved]) -> None:
        if env.data.email.startswith(self.tag):
            self.ids.append(env.data.mailbox_id)


@pytest.fixture
async def seen(nats_url: str, mongo_uri: str) -> AsyncIterator[Seen]:
    s = Seen(nats_url, mongo_uri, uuid.uuid4().hex[:8])
    await s.rt.start()
    yield s
    await s.rt.stop()


def event(rt: ServiceRuntime, tag: str, mailbox_id: str) -> dict[str, object]:
    env = rt.envelope(
        MailboxApproved(mailbox_id=mailbox_id, email=f"{tag}@example.org", approved_at=datetime.now(UTC))
    )
    return outbox_entry(env)


async def test_events_come_from_the_writes_in_order_without_a_write_back(
    nats_url: str, mongo_uri: str, seen: Seen
) -> None:
    rt = ServiceRuntime(
        "changes-test",
        settings_for(nats_url, mongo_uri, f"t_{uuid.uuid4().hex[:12]}"),
        outbox_collections=["things"],
    )
    await rt.start()
    try:
        assert isinstance(rt.relay, ChangeStreamRelay)
        tag = seen.tag
        await rt.db.things.insert_one({"_id": "a", **new_document_outbox([event(rt, tag, "a0")])})
        await rt.db.things.update_one({"_id": "a"}, {"$set": {"quiet": True}})  # no events: not seen
        for n in range(1, 4):
            await rt.db.things.update_one(
                {"_id": "a"}, with_outbox({"$set": {"n": n}}, [event(rt, tag, f"a{n}")])
            )
        await rt.db.things.insert_many(
            [{"_id": f"b{n}", **new_document_outbox([event(rt, tag, f"b{n}")])} for n in range(3)]
        )
        await rt.db.things.bulk_write(
            [
                UpdateOne({"_id": f"b{n}"}, with_outbox({"$inc": {"v": 1}}, [event(rt, tag, f"b{n}-2")]))
                for n in range(3)
            ]
        )
        await eventually(lambda: len(seen.ids) >= 10, "the ten events")
        assert [i for i in seen.ids if i.startswith("a")] == ["a0", "a1", "a2", "a3"]
        for n in range(3):
            assert seen.ids.index(f"b{n}") < seen.ids.index(f"b{n}-2")
        assert len(seen.ids) == 10
        doc = await rt.db.things.find_one({"_id": "a"})
        assert doc is not None and doc["n"] == 3 and "outbox_pending" not in doc
        assert [json.loads(e["body"])["data"]["mailbox_id"] for e in doc["outbox"]] == ["a3"]
    finally:
        await rt.stop()


async def test_events_written_while_the_relay_was_down_are_published_after_a_restart(
    nats_url: str, mongo_uri: str, seen: Seen
) -> None:
    db = f"t_{uuid.uuid4().hex[:12]}"
    tag = seen.tag
    first = ServiceRuntime(
        "changes-restart", settings_for(nats_url, mongo_uri, db), outbox_collections=["things"]
    )
    await first.start()
    await first.db.things.insert_one({"_id": "x", **new_document_outbox([event(first, tag, "before")])})
    await eventually(lambda: seen.ids == ["before"], "the event before the stop")
    await first.stop()
    # Written while no relay runs (e.g. by a replica that crashed before its relay published).
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    things = client[first.db.name].things
    await things.insert_one({"_id": "y", **new_document_outbox([event(first, tag, "while-down")])})
    await things.update_one({"_id": "x"}, with_outbox({"$set": {"k": 1}}, [event(first, tag, "x-later")]))
    second = ServiceRuntime(
        "changes-restart", settings_for(nats_url, mongo_uri, db), outbox_collections=["things"]
    )
    await second.start()
    try:
        await eventually(lambda: len(seen.ids) >= 3, "the events written while the relay was down")
        assert seen.ids == ["before", "while-down", "x-later"], "nothing lost, nothing twice"
    finally:
        await second.stop()
        await client.close()


async def test_the_first_start_stores_its_position_before_anything_is_written(
    nats_url: str, mongo_uri: str, seen: Seen
) -> None:
    db = f"t_{uuid.uuid4().hex[:12]}"
    rt = ServiceRuntime("changes-first", settings_for(nats_url, mongo_uri, db), outbox_collections=["things"])
    assert await stored_position(rt.db, "changes-first-outbox") is None
    await rt.start()
    stored = await stored_position(rt.db, "changes-first-outbox")
    assert stored is not None and stored["token"]
    await rt.relay.stop() if rt.relay else None  # the relay dies before it publishes anything
    await rt.db.things.insert_one({"_id": "z", **new_document_outbox([event(rt, seen.tag, "first")])})
    await rt.stop()
    again = ServiceRuntime(
        "changes-first", settings_for(nats_url, mongo_uri, db), outbox_collections=["things"]
    )
    await again.start()
    try:
        await eventually(lambda: seen.ids == ["first"], "the event written after the first start")
    finally:
        await again.stop()


async def test_what_an_outbox_run_left_goes_out_when_the_service_starts_on_the_change_stream(
    nats_url: str, mongo_uri: str, seen: Seen
) -> None:
    db = f"t_{uuid.uuid4().hex[:12]}"
    rt = ServiceRuntime(
        "changes-switch", settings_for(nats_url, mongo_uri, db), outbox_collections=["things"]
    )
    use_change_stream(False)  # written by an earlier run in outbox mode, never relayed
    await rt.db.things.insert_one(
        {"_id": "o", **new_document_outbox([event(rt, seen.tag, "left-in-outbox")])}
    )
    await rt.start()
    try:
        await rt.db.things.update_one(
            {"_id": "o"}, with_outbox({"$set": {"k": 1}}, [event(rt, seen.tag, "after")])
        )
        await eventually(lambda: len(seen.ids) >= 2, "both events")
        assert seen.ids == ["left-in-outbox", "after"]
    finally:
        await rt.stop()


async def test_an_entry_refused_again_and_again_is_dead_lettered_and_the_rest_goes_on(
    nats_url: str, mongo_uri: str, seen: Seen
) -> None:
    rt = ServiceRuntime(
        "changes-dlq",
        settings_for(nats_url, mongo_uri, f"t_{uuid.uuid4().hex[:12]}"),
        outbox_collections=["things"],
    )
    dead: list[DeadLettered] = []

    async def on_dead(env: Envelope[DeadLettered]) -> None:
        dead.append(env.data)

    name = "changes-dlq-outbox"
    listener = ServiceRuntime("dlq-listener-cs", rt.settings, uses_database=False)
    listener.consume(DeadLettered, f"dlq-{uuid.uuid4().hex[:6]}", on_dead, subject=dead_letter_subject(name))
    await listener.start()
    await rt.start()
    try:
        refused = {"id": str(uuid.uuid4()), "subject": "mailwarden.nowhere.x", "body": "{}"}
        await rt.db.things.insert_one(
            {"_id": "p", **new_document_outbox([refused, event(rt, seen.tag, "after")])}
        )
        await rt.db.things.insert_one({"_id": "q", **new_document_outbox([event(rt, seen.tag, "q")])})
        await eventually(lambda: len(dead) == 1 and len(seen.ids) == 2, "the dead letter and both events")
        assert sorted(seen.ids) == ["after", "q"]
        assert dead[0].subject == "mailwarden.nowhere.x" and "refused 5 times" in dead[0].reason
    finally:
        await rt.stop()
        await listener.stop()


async def test_a_stored_position_the_stream_cannot_resume_from_publishes_the_latest_events_again(
    nats_url: str, mongo_uri: str, seen: Seen
) -> None:
    db = f"t_{uuid.uuid4().hex[:12]}"
    rt = ServiceRuntime("changes-lost", settings_for(nats_url, mongo_uri, db), outbox_collections=["things"])
    await rt.start()
    await rt.relay.stop() if rt.relay else None  # the relay is down while these are written
    await rt.db.things.insert_one({"_id": "l1", **new_document_outbox([event(rt, seen.tag, "lost1")])})
    await rt.db.things.insert_one({"_id": "l2", **new_document_outbox([event(rt, seen.tag, "lost2")])})
    # The stored position is not a token the stream knows (as after the oplog moved past it).
    newest = await stored_position(rt.db, "changes-lost-outbox")
    assert newest is not None
    await rt.db[POSITIONS].update_one({"_id": newest["_id"]}, {"$set": {"token": {"_data": "00"}}})
    await rt.stop()
    again = ServiceRuntime(
        "changes-lost", settings_for(nats_url, mongo_uri, db), outbox_collections=["things"]
    )
    await again.start()
    try:
        await eventually(
            lambda: sorted(seen.ids) == ["lost1", "lost2"], "the events written since the position"
        )
        stored = await stored_position(again.db, "changes-lost-outbox")
        assert stored is not None and stored["token"] != {"_data": "00"}, "a fresh position is stored"
        await again.db.things.update_one(
            {"_id": "l1"}, with_outbox({"$set": {"k": 1}}, [event(again, seen.tag, "after")])
        )
        await eventually(lambda: "after" in seen.ids, "the stream followed again")
    finally:
        await again.stop()


async def test_an_idle_relay_moves_its_stored_position_past_writes_it_does_not_watch(
    nats_url: str, mongo_uri: str, seen: Seen
) -> None:
    """Else a restart makes the server scan everything since the last event again (it timed out)."""
    rt = ServiceRuntime(
        "changes-idle",
        settings_for(nats_url, mongo_uri, f"t_{uuid.uuid4().hex[:12]}"),
        outbox_collections=["things"],
    )
    await rt.start()
    try:
        tag = seen.tag
        await rt.db.things.insert_one({"_id": "a", **new_document_outbox([event(rt, tag, "a0")])})
        await eventually(lambda: seen.ids == ["a0"], "the event published")
        relay = rt.relay
        assert isinstance(relay, ChangeStreamRelay)

        async def stored() -> Any:
            doc = await stored_position(rt.db, relay.name)
            return doc and doc["token"]

        async def settled() -> bool:
            token = await stored()
            return token is not None and token == relay._published

        await eventually(settled, "the event's position stored")
        after_event = await stored()
        await rt.db.other.insert_many([{"n": n} for n in range(50)])  # not watched: no events

        async def moved() -> bool:
            return bool(await stored() != after_event)

        await eventually(moved, "the stored position moved past the unwatched writes", 15)
        await rt.db.things.update_one({"_id": "a"}, with_outbox({"$set": {"n": 1}}, [event(rt, tag, "a1")]))
        await eventually(lambda: seen.ids == ["a0", "a1"], "the next event, once")
    finally:
        await rt.stop()


class GetMores(monitoring.CommandListener):
    """Counts the getMore commands a client sends (each one a change-stream read on the server)."""

    def __init__(self) -> None:
        self.count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "getMore":
            self.count += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_the_relay_reads_when_its_own_writes_wake_it_not_on_every_write_to_the_server(
    nats_url: str, mongo_uri: str, seen: Seen
) -> None:
    """A getMore waiting on the server was woken by every write to any database (a read each)."""
    use_change_stream(True)  # how with_outbox writes (a ServiceRuntime sets it when it starts)
    db_name = f"t_{uuid.uuid4().hex[:12]}"
    reads = GetMores()
    wake: list[Callable[[], None]] = []
    own = OwnWrites(db_name, ["things"], lambda: wake[0]())
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, event_listeners=[reads, own])
    other: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    bus = NatsBus(settings_for(nats_url, mongo_uri, db_name), "changes-wake")
    await bus.connect()

    async def publish(subject: str, event_id: str, body: bytes) -> object:
        return await publish_raw(bus, subject, event_id, body)

    # The poll is far away: what is published within the test was read because a write woke it.
    relay = ChangeStreamRelay(client[db_name], ["things"], publish, name="changes-wake", poll_s=120.0)
    wake.append(relay.wake)
    await relay.prepare()
    relay.start()
    try:
        await eventually(lambda: reads.count >= 1, "the first read (caught up)")
        await asyncio.sleep(0.3)
        before = reads.count
        for n in range(50):  # another service's writes, and writes without events of its own
            await other[f"{db_name}_other"].things.insert_one({"n": n})
            await client[db_name].plain.insert_one({"n": n})
        await asyncio.sleep(0.5)
        assert reads.count - before <= 1, "writes that are not its own events read nothing"
        tag = seen.tag
        mine = client[db_name].things
        await mine.insert_one({"_id": "w", **new_document_outbox([event(seen.rt, tag, "woken")])})
        await eventually(lambda: seen.ids == ["woken"], "its own write published without the poll", 20)
        await mine.update_one({"_id": "w"}, with_outbox({"$set": {"n": 1}}, [event(seen.rt, tag, "again")]))
        await eventually(lambda: seen.ids == ["woken", "again"], "the next one too", 20)
    finally:
        await relay.stop()
        await bus.close(5.0)
        await client.close()
        await other.close()


class Published:
    """A relay's publish function that keeps the mailbox ids of what it was given, in order."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    async def __call__(self, subject: str, event_id: str, body: bytes) -> object:
        self.ids.append(json.loads(body)["data"]["mailbox_id"])
        return None


class PositionWrites(monitoring.CommandListener):
    """The write commands a client sends to the positions' collection, by name."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command.get(event.command_name) == POSITIONS:
            self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def relay_positions(db: Any, name: str) -> list[dict[str, Any]]:
    return [d async for d in db[POSITIONS].find({"relay": name}).sort("_id", 1)]


async def test_positions_are_inserted_bounded_and_a_restart_resumes_from_the_newest(
    nats_url: str, mongo_uri: str
) -> None:
    """Issue #16: storing a position updates no document; the old ones go, the newest is used."""
    use_change_stream(True)
    name = f"changes-positions-{uuid.uuid4().hex[:6]}"
    writes = PositionWrites()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, event_listeners=[writes])
    db = client[f"t_{uuid.uuid4().hex[:12]}"]
    rt = ServiceRuntime(
        "positions-envelopes", settings_for(nats_url, mongo_uri, db.name), uses_database=False
    )
    first_out = Published()
    first = ChangeStreamRelay(
        db, ["things"], first_out, name=name, checkpoint_s=0.0, settle_s=0.05, keep_positions=3
    )
    await first.prepare()
    first.start()
    try:
        for n in range(8):  # one at a time: a position stored after each
            await db.things.insert_one({"_id": f"a{n}", **new_document_outbox([event(rt, "p", f"a{n}")])})
            first.wake()
            await eventually(lambda n=n: first_out.ids == [f"a{m}" for m in range(n + 1)], f"event a{n}")

            async def stored_after(n: int = n) -> bool:
                newest = await stored_position(db, name)
                return newest is not None and newest["token"] == first._published

            await eventually(stored_after, f"the position after a{n}")
        positions = await relay_positions(db, name)
        assert 1 <= len(positions) <= 4, "pruned every 3 positions: at most 3 + 1 kept"
        assert positions[-1]["_id"].startswith(f"{name}/") and positions[-1]["at"]
        assert "update" not in writes.names and writes.names.count("insert") >= 8
        assert writes.names.count("delete") >= 2, "old positions removed in one delete every 3"
    finally:
        await first.stop()
    await first.drain()
    assert await unpublished(db, ["things"], name) == 0
    # A restart publishes nothing again: it resumes from the newest position, not an older one.
    second_out = Published()
    second = ChangeStreamRelay(db, ["things"], second_out, name=name, settle_s=0.05)
    await second.prepare()
    second.start()
    try:
        await db.things.insert_one({"_id": "b", **new_document_outbox([event(rt, "p", "b")])})
        second.wake()
        await eventually(lambda: "b" in second_out.ids, "the next event")
        assert second_out.ids == ["b"], "nothing before the newest position published again"
    finally:
        await second.stop()
        await client.close()


async def test_the_single_position_document_of_earlier_versions_is_read_once_then_removed(
    nats_url: str, mongo_uri: str
) -> None:
    """After an upgrade the relay resumes from the old in-place document; its first stored position
    replaces it."""
    use_change_stream(True)
    name = f"changes-upgrade-{uuid.uuid4().hex[:6]}"
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    db = client[f"t_{uuid.uuid4().hex[:12]}"]
    rt = ServiceRuntime("upgrade-envelopes", settings_for(nats_url, mongo_uri, db.name), uses_database=False)
    await db.things.insert_one({"_id": "old", **new_document_outbox([event(rt, "u", "published-before")])})
    async with await db.watch(events_pipeline(["things"])) as stream:
        token = stream.resume_token
    assert token is not None
    # What an earlier version stored (one document, updated in place), then events it did not publish.
    await db[POSITIONS].insert_one({"_id": name, "token": dict(token), "at": datetime.now(UTC)})
    await db.things.insert_one({"_id": "u1", **new_document_outbox([event(rt, "u", "u1")])})
    await db.things.update_one({"_id": "old"}, with_outbox({"$set": {"k": 1}}, [event(rt, "u", "u2")]))
    out = Published()
    relay = ChangeStreamRelay(db, ["things"], out, name=name, settle_s=0.05)
    await relay.prepare()  # the old document counts as stored: no fresh position over it
    relay.start()
    try:
        await eventually(lambda: out.ids == ["u1", "u2"], "the events after the old position, once")

        async def replaced() -> bool:
            ids = [d["_id"] async for d in db[POSITIONS].find({})]
            return len(ids) == 1 and ids[0].startswith(f"{name}/")

        await eventually(replaced, "the old document replaced by an inserted position")
        assert out.ids == ["u1", "u2"]
    finally:
        await relay.stop()
        await client.close()
