"""``alert_occurrences`` is bounded: an occurrence lives until its alert has folded it in.

With the change-stream relay the fold deletes its tail at once; with the outbox relay the folded
occurrences stay until their events are published, and the retention sweep removes them (and what
a crash between a fold and its delete leaves). Counts and de-duplication stay as they were.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alert_svc_helpers import mailbox_ref, user
from pymongo import AsyncMongoClient

from alert_svc.config import Settings
from alert_svc.processor import StatusProcessor
from alert_svc.retention import OccurrenceRetention
from alert_svc.store import Stores
from alert_svc.store.occurrences import generation
from alert_svc.store.wall import WallFilter
from contracts.envelope import Envelope, make_envelope
from contracts.errors import ErrorCode
from contracts.events import MailboxStatusChanged, SettingsSnapshot
from contracts.testing import status_failed, status_succeeded
from mailwarden_runtime.outbox import PENDING, change_stream_in_use, use_change_stream

T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


@pytest.fixture
async def stores(mongo_uri: str) -> AsyncIterator[Stores]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    name = "t_" + uuid.uuid4().hex[:12]
    made = Stores.on(client[name])
    await made.ensure_indexes()
    levels = ["error", "warning", "information"]
    await made.read_models.models.put_settings(SettingsSnapshot(alert_levels=levels, version=1))
    yield made
    await client.drop_database(name)
    await client.close()


@pytest.fixture
def relay_mode() -> Iterator[Any]:
    """Set how events are written (process-wide) for one test, then put it back."""
    before = change_stream_in_use()
    yield use_change_stream
    use_change_stream(before)


def repeats(mailbox: str, first: int, last: int) -> list[Envelope[MailboxStatusChanged]]:
    ref = mailbox_ref(mailbox, user("u1"))
    return [
        make_envelope(status_succeeded(ref, f"t{n}"), "test", occurred_at=T0 + timedelta(minutes=n))
        for n in range(first, last + 1)
    ]


async def test_the_fold_deletes_its_tail_with_the_change_stream_relay(
    stores: Stores, relay_mode: Any
) -> None:
    relay_mode(True)
    processor = StatusProcessor(stores, Settings(dev_mode=True, log_setup=False))
    envs = repeats("a", 1, 26)
    for env in envs:
        await processor.handle_batch([env])
    [alert] = await stores.alerts.alerts.find({}).to_list(None)
    # folded at the 21st: the 19 inserted before it are gone, the 5 after it are the tail
    assert alert["count"] == 21
    left = await stores.occurrences.occurrences.find({}).to_list(None)
    assert sorted(o["seq"] for o in left) == [22, 23, 24, 25, 26]
    assert {o["gen"] for o in left} == {generation(alert["_id"], 21)}
    # redelivered: one folded (and deleted), one in the tail
    await processor.handle_batch([envs[9], envs[24]])
    [seen] = await stores.wall.find_alerts(WallFilter(), 10)
    assert (seen.count, seen.last_test_id) == (26, "t26")
    assert await stores.occurrences.occurrences.count_documents({}) == 5

    # A repeated error resolved by a success: the resolution folds its tail and deletes it.
    other = mailbox_ref("b", user("u1"))
    for n in range(30, 33):
        error = status_failed(other, f"t{n}", ErrorCode.AUTH_FAILED, retry_at=T0 + timedelta(hours=1))
        await processor.handle_batch([make_envelope(error, "test", occurred_at=T0 + timedelta(minutes=n))])
    assert await stores.occurrences.occurrences.count_documents({}) == 5 + 2 * 2  # two walls, two repeats
    success = status_succeeded(other, "t33")
    await processor.handle_batch([make_envelope(success, "test", occurred_at=T0 + timedelta(minutes=33))])
    resolved = await stores.alerts.alerts.find({"state": "resolved", "mailbox_id": "b"}).to_list(None)
    assert resolved and all(r["count"] == 3 for r in resolved)
    assert await stores.occurrences.occurrences.count_documents({}) == 5
    assert await OccurrenceRetention(stores.occurrences, 3600, page=2).sweep() == 0  # the tail stays


async def test_the_sweep_removes_what_the_outbox_relay_and_a_crash_leave(
    stores: Stores, relay_mode: Any
) -> None:
    relay_mode(False)
    processor = StatusProcessor(stores, Settings(dev_mode=True, log_setup=False))
    for env in repeats("a", 1, 26):
        await processor.handle_batch([env])
    [alert] = await stores.alerts.alerts.find({}).to_list(None)
    occurrences = stores.occurrences.occurrences
    retention = OccurrenceRetention(stores.occurrences, 3600, page=4)
    # Folded, but their events still wait in the outbox: kept until published.
    assert await occurrences.count_documents({}) == 19 + 5
    assert await retention.sweep() == 0
    # The relay published everything (it removes the entries and the pending flag).
    await occurrences.update_many({}, {"$set": {"outbox": []}, "$unset": {PENDING: "", "outbox_since": ""}})
    assert await retention.sweep() == 19
    # What a crash between a fold and its delete leaves, and an occurrence of an alert gone since.
    stale = {"alert_id": alert["_id"], "gen": generation(alert["_id"], 1), "occurrence": "x", "at": T0}
    await occurrences.insert_many(
        [
            {"_id": "left-by-a-crash", "seq": 2, **stale},
            {**stale, "_id": "alert-gone", "alert_id": "gone", "gen": generation("gone", 3), "seq": 4},
        ]
    )
    assert await retention.sweep() == 2
    left = await occurrences.find({}).to_list(None)
    assert sorted(o["seq"] for o in left) == [22, 23, 24, 25, 26]
    [seen] = await stores.wall.find_alerts(WallFilter(), 10)
    assert (seen.count, seen.last_test_id) == (26, "t26")
