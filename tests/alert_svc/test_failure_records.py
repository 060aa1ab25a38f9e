"""The direction records grouping and the majority count read: written only when they change."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from alert_svc.store.failures import FailureStore

T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


@pytest.fixture
async def store(mongo_uri: str) -> AsyncIterator[FailureStore]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    name = "t_" + uuid.uuid4().hex[:12]
    failures = FailureStore(client[name])
    await failures.ensure_indexes()
    yield failures
    await client.drop_database(name)
    await client.close()


async def test_a_healthy_mailbox_writes_no_record(store: FailureStore) -> None:
    for n in range(3):
        await store.record_outcomes("m1", "m1@x", "p1", [("incoming", None), ("outgoing", None)], T0)
        await store.record_outcomes("m1", "m1@x", "p1", [("incoming", None)], T0 + timedelta(minutes=n))
    assert await store.failures.count_documents({}) == 0
    assert await store.failed_mailbox_count("p1", T0) == 0


async def test_a_failure_is_counted_until_a_newer_success_clears_it(store: FailureStore) -> None:
    at = T0 + timedelta(minutes=1)
    await store.record_outcomes("m1", "m1@x", "p1", [("incoming", "auth_failed"), ("outgoing", None)], at)
    assert await store.failing_mailboxes("p1", "incoming", "auth_failed", T0) == [("m1", "m1@x")]
    assert await store.failed_mailbox_count("p1", T0) == 1
    assert await store.failures.count_documents({}) == 1  # the succeeding direction left no record

    await store.record_outcomes("m1", "m1@x", "p1", [("incoming", None)], T0)  # older: changes nothing
    assert await store.failed_mailbox_count("p1", T0) == 1
    await store.record_outcomes("m1", "m1@x", "p1", [("incoming", "dns_failed")], T0)  # older failure
    assert await store.failing_mailboxes("p1", "incoming", "auth_failed", T0) == [("m1", "m1@x")]

    await store.record_outcomes("m1", "m1@x", "p1", [("incoming", None)], at + timedelta(minutes=1))
    assert await store.failed_mailbox_count("p1", T0) == 0
    assert await store.failing_mailboxes("p1", "incoming", "auth_failed", T0) == []


async def test_a_redelivered_outcome_changes_nothing(store: FailureStore) -> None:
    outcome = [("outgoing", "smtp_auth_failed")]
    await store.record_outcomes("m2", "m2@x", "p1", outcome, T0)
    await store.record_outcomes("m2", "m2@x", "p1", outcome, T0)
    assert await store.failing_mailboxes("p1", "outgoing", "smtp_auth_failed", T0) == [("m2", "m2@x")]
    assert await store.failures.count_documents({}) == 1


class Updates(monitoring.CommandListener):
    """The update commands a client sends (each one planned by the server, matching or not)."""

    def __init__(self) -> None:
        self.count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "update":
            self.count += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_successes_send_an_update_only_for_records_that_are_failing(mongo_uri: str) -> None:
    updates = Updates()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongo_uri, tz_aware=True, event_listeners=[updates]
    )
    name = "t_" + uuid.uuid4().hex[:12]
    store = FailureStore(client[name])
    try:
        await store.record_outcomes("sick", "sick@x", "p1", [("incoming", "auth_failed")], T0)
        before = updates.count
        both = [("incoming", None), ("outgoing", None)]
        await store.record_many(
            [(f"m{n}", f"m{n}@x", "p1", both, T0 + timedelta(minutes=1)) for n in range(20)]
        )
        assert updates.count == before, "healthy mailboxes: read, nothing written"
        await store.record_many(
            [(m, f"{m}@x", "p1", both, T0 + timedelta(minutes=2)) for m in ("sick", "m1", "m2")]
        )
        assert updates.count == before + 1, "one update: the failing record's clear"
        assert await store.failed_mailbox_count("p1", T0) == 0
    finally:
        await client.drop_database(name)
        await client.close()
