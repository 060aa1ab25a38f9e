"""Status events handled in batches leave exactly what handling them one by one leaves.

The same sequence of events (successes, repeats, a mailbox twice in one batch, failures that
group and count towards the majority alert, warnings on the profile's alert, a success that
leaves a group) is handled by ``StatusProcessor.handle`` one event at a time on one database and
by ``handle_batch`` in batches on another; the stored alerts, their events and the direction
records must be the same document for document.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alert_svc_helpers import PROFILE_OWNER, mailbox_ref, user
from pymongo import AsyncMongoClient

from alert_svc.config import Settings
from alert_svc.processor import StatusProcessor
from alert_svc.store import Stores
from alert_svc.store.alerts import AlertDoc
from alert_svc.store.wall import WallFilter
from contracts.envelope import Envelope, make_envelope
from contracts.errors import ErrorCode, WarningCode
from contracts.events import MailboxStatusChanged, SettingsSnapshot
from contracts.testing import status_failed, status_succeeded
from mailwarden_runtime.outbox import change_stream_in_use, use_change_stream

T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
Processor = Callable[[list[Envelope[MailboxStatusChanged]]], Any]


def events() -> list[Envelope[MailboxStatusChanged]]:
    owner = user("u1")
    ref = {m: mailbox_ref(m, owner) for m in ("a", "b", "c", "d", "e", "f")}
    other = {m: mailbox_ref(m, user("u2"), profile="prf2") for m in ("x", "y", "z")}
    sequence = [
        *(status_succeeded(r, f"t1-{m}") for m, r in ref.items()),
        *(status_succeeded(r, f"t1-{m}") for m, r in other.items()),
        status_succeeded(ref["a"], "t2-a"),  # a repeat: counted on the open information alert
        status_succeeded(ref["a"], "t3-a"),  # the same mailbox twice in a run
        status_succeeded(ref["a"], "t3-a"),  # a redelivered test: counted once
        status_failed(ref["b"], "t2-b", ErrorCode.AUTH_FAILED, retry_at=T0 + timedelta(minutes=5)),
        status_succeeded(other["x"], "t2-x"),
        status_failed(ref["c"], "t2-c", ErrorCode.DNS_NXDOMAIN),  # profile scope: grouped from the 2nd on
        status_succeeded(ref["e"], "t2-e"),
        status_failed(ref["d"], "t2-d", ErrorCode.DNS_NXDOMAIN),
        status_failed(ref["e"], "t3-e", ErrorCode.DNS_NXDOMAIN),
        status_succeeded(other["y"], "t2-y", warnings=(WarningCode.WEAK_TLS,)),
        status_succeeded(other["z"], "t2-z"),
        status_succeeded(ref["c"], "t3-c"),  # leaves the group: its profile has open profile alerts
        status_succeeded(ref["f"], "t2-f"),
        status_succeeded(ref["b"], "t3-b"),  # resolves its own error
        status_succeeded(other["x"], "t3-x"),
        status_succeeded(other["y"], "t3-y"),  # no warning any more: the profile's warning resolves
    ]
    return [
        make_envelope(e, "test", occurred_at=T0 + timedelta(seconds=n), event_id=uuid.UUID(int=n + 1))
        for n, e in enumerate(sequence)
    ]


@pytest.fixture
async def stores(mongo_uri: str) -> AsyncIterator[Callable[[], Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri, tz_aware=True)
    names: list[str] = []

    async def make() -> Stores:
        names.append("t_" + uuid.uuid4().hex[:12])
        made = Stores.on(client[names[-1]])
        await made.ensure_indexes()
        levels = ["error", "warning", "information"]
        await made.read_models.models.put_settings(SettingsSnapshot(alert_levels=levels, version=1))
        return made

    yield make
    for name in names:
        await client.drop_database(name)
    await client.close()


async def stored(s: Stores) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    alerts = await s.alerts.alerts.find({}).sort("_id", 1).to_list(None)
    alerts += await s.occurrences.occurrences.find({}).sort("_id", 1).to_list(None)
    for alert in alerts:
        # each event as published, but the moment it was made
        for key in ("outbox_since", "outbox_at"):  # when the relay should look (either relay mode)
            alert.pop(key, None)
        alert["outbox"] = [
            {**entry, "body": json.loads(entry["body"]) | {"occurred_at": None}} for entry in alert["outbox"]
        ]
    failures = await s.failures.failures.find({}).sort("_id", 1).to_list(None)
    return alerts, failures


@pytest.mark.parametrize("size", [64, 5, 2])
async def test_batches_store_what_one_by_one_stores(stores: Callable[[], Any], size: int) -> None:
    settings = Settings(dev_mode=True, log_setup=False)
    one, batched = await stores(), await stores()
    single = StatusProcessor(one, settings)
    many = StatusProcessor(batched, settings)
    envelopes = events()
    for env in envelopes:
        await single.handle(env)
    for start in range(0, len(envelopes), size):
        await many.handle_batch(envelopes[start : start + size])

    expected, got = await stored(one), await stored(batched)
    assert [a["_id"] for a in got[0]] == [a["_id"] for a in expected[0]]
    assert got == expected
    walls = {a["recipient_key"] for a in got[0] if "recipient_key" in a}
    assert walls == {"user:u1", "user:u2", f"user:{PROFILE_OWNER.id}"}
    by_code = {(a["code"], a["state"]) for a in got[0] if "code" in a}
    assert ("dns_nxdomain", "open") in by_code and ("weak_tls", "resolved") in by_code
    [info_a] = [a for a in got[0] if a.get("mailbox_id") == "a" and a.get("code") == "mailbox_enabled"]
    assert info_a["count"] == 1  # its repeats are inserted occurrences, added in by every reader:
    [seen] = await batched.occurrences.with_tails([AlertDoc.model_validate(info_a)])
    assert seen.count == 3 and seen.last_test_id == "t3-a" and seen.tail == ["t2-a", "t3-a"]


async def test_repeats_are_inserted_occurrences_folded_every_twenty(stores: Callable[[], Any]) -> None:
    """A repeat that changes only the count is an insert; the alert is updated every 20 and on its
    resolution; every reader sees the count as it is, and a redelivered test counts once.

    With the outbox relay (set here: the mode is process-wide), so that the folded occurrences and
    their events stay until published (test_occurrence_retention.py: what deletes them)."""
    before = change_stream_in_use()
    use_change_stream(False)
    try:
        await repeats_folded_every_twenty(await stores())
    finally:
        use_change_stream(before)


async def repeats_folded_every_twenty(s: Stores) -> None:
    processor = StatusProcessor(s, Settings(dev_mode=True, log_setup=False))
    ref = mailbox_ref("a", user("u1"))
    envs = [
        make_envelope(
            status_succeeded(ref, f"t{n}"), "test", occurred_at=occurrence_at(n), event_id=uuid.UUID(int=n)
        )
        for n in range(1, 27)
    ]
    for env in envs:
        await processor.handle_batch([env])
    await processor.handle_batch([envs[9], envs[24]])  # redelivered: one folded, one in the tail
    [stored_doc] = await s.alerts.alerts.find({}).to_list(None)
    assert stored_doc["count"] == 21 and len(stored_doc["occurrences"]) == 20  # folded at the 21st
    assert await s.occurrences.occurrences.count_documents({}) == 19 + 5
    [alert] = await s.wall.find_alerts(WallFilter(), 10)
    assert (alert.count, alert.last_test_id, alert.last_seen) == (26, "t26", occurrence_at(26))
    events = [
        json.loads(o["outbox"][0]["body"])["data"]
        for o in await s.occurrences.occurrences.find().to_list(None)
    ]
    assert sorted(e["count"] for e in events) == [*range(2, 21), *range(22, 27)]
    # An error repeated with the same text, then resolved by a success: the tail is folded in.
    other = mailbox_ref("b", user("u1"))
    retry_at = T0 + timedelta(hours=1)
    for n in range(30, 33):
        error = status_failed(other, f"t{n}", ErrorCode.AUTH_FAILED, retry_at=retry_at)
        await processor.handle_batch([make_envelope(error, "test", occurred_at=occurrence_at(n))])
    await processor.handle_batch(
        [make_envelope(status_succeeded(other, "t33"), "test", occurred_at=occurrence_at(33))]
    )
    resolved = await s.alerts.alerts.find({"state": "resolved", "mailbox_id": "b"}).to_list(None)
    assert resolved and all(r["count"] == 3 and len(r["occurrences"]) == 3 for r in resolved)


def occurrence_at(n: int) -> datetime:
    return T0 + timedelta(minutes=n)
