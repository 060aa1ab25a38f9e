"""Pieces of sync-svc without servers: the sync loop's failure rules, UID sets, dates, fair shares."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from unittest.mock import patch

import pytest

from contracts.email import EmailReceived
from contracts.envelope import make_envelope, parse_envelope
from contracts.errors import ErrorCode
from contracts.models import MailboxRef, Owner, OwnerKind
from mailwarden_mailnet.errors import NetError
from mailwarden_mailnet.imap import capability_code
from mailwarden_mailnet.use_login import LoginSource
from mailwarden_runtime.bounded import cancel_and_wait
from mailwarden_runtime.crypto import KeyRing
from mailwarden_servers import eventually
from sync_svc import worker as worker_module
from sync_svc.app import young_collections
from sync_svc.batched import Batcher, Failed
from sync_svc.documents import LedgerEntry
from sync_svc.imap_sync import internal_date, uid_set
from sync_svc.leases import LeaseTable
from sync_svc.pipeline import Pipeline
from sync_svc.publisher import Fetched, Publisher
from sync_svc.rawstore import RawStore
from sync_svc.session import MailboxSync
from sync_svc.worker import Running, Worker


async def _no_desk(subject: str, body: bytes, timeout_s: float) -> bytes:
    raise AssertionError("these passes never log in")


class Recorder:
    """Stands in for Episodes: records what the loop reports."""

    def __init__(self) -> None:
        self.codes: list[ErrorCode] = []

    def backoff_s(self, failures: int) -> float:
        return 0.01

    async def failed(self, target: Any, protocol: str, code: ErrorCode, step: str, detail: str) -> float:
        self.codes.append(code)
        return 0.01


class Flaky(MailboxSync):
    protocol = "imap"

    def __init__(self, errors: list[BaseException], recorder: Recorder) -> None:
        logins = LoginSource(
            _no_desk, KeyRing.parse(KeyRing.generate_key_text("unit")), purpose="sync", direction="incoming"
        )
        services: Any = SimpleNamespace(episodes=recorder, logins=logins)
        target: Any = SimpleNamespace(mailbox_id="m1", poll_interval_s=3600.0)
        super().__init__(services, target, rng=random.Random(1))
        self.errors = errors
        self.passes = 0

    async def pass_once(self) -> None:
        self.passes += 1
        if self.errors:
            raise self.errors.pop(0)
        await asyncio.sleep(3600)  # caught up: idle forever


async def test_only_the_mailboxs_own_failures_open_an_episode() -> None:
    recorder = Recorder()
    sync = Flaky(
        [ConnectionError("NATS away"), NetError(ErrorCode.AUTH_FAILED, "NO"), RuntimeError("bug")], recorder
    )
    task = asyncio.create_task(sync.run())
    for _ in range(100):
        if sync.passes == 4:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert sync.passes == 4
    assert recorder.codes == [ErrorCode.AUTH_FAILED]  # NATS away and a bug are not the mailbox's failures


def test_uid_sets_are_ranges() -> None:
    assert uid_set([1, 2, 3, 7, 9, 10]) == b"1:3,7,9:10"
    assert uid_set([5]) == b"5"


def test_internal_dates() -> None:
    assert internal_date(" 7-Jul-2026 02:44:25 -0700") == datetime(2026, 7, 7, 9, 44, 25, tzinfo=UTC)
    assert internal_date("garbage") is None and internal_date(None) is None


def test_fair_share() -> None:
    assert LeaseTable.fair_share(10, 3, 100) == 4
    assert LeaseTable.fair_share(10, 1, 4) == 4
    assert LeaseTable.fair_share(0, 2, 10) == 0


class Swallowing(Flaky):
    """A pass whose library turns the cancellation into an error (asyncio.wait_for on 3.11, as in
    nats-py's request or pymongo's send), then the loop's backoff."""

    async def pass_once(self) -> None:
        self.passes += 1
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise TimeoutError("timed out") from None


async def test_a_mailbox_task_ends_even_when_its_pass_swallows_the_cancellation() -> None:
    recorder = Recorder()
    recorder.backoff_s = lambda failures: 3600.0  # type: ignore[method-assign]
    sync = Swallowing([], recorder)
    task = asyncio.create_task(sync.run())
    await asyncio.sleep(0.05)
    assert await cancel_and_wait(task, 1.0)  # before: it slept the backoff and passed again, for good
    assert task.cancelled() and sync.passes == 1


async def test_the_worker_stops_a_task_that_never_ends_within_its_bound() -> None:
    """A stuck mailbox task must not hold the worker's reconcile (no other mailbox would start)."""

    released = asyncio.Event()

    async def deaf() -> None:
        while not released.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await released.wait()

    stuck = asyncio.create_task(deaf())
    nothing: Any = SimpleNamespace()
    worker = Worker(nothing, nothing, reconcile_s=1, poll_floor_s=1, max_mailboxes=1)
    worker.running["m1"] = Running(stuck, "f", 0)
    started = asyncio.get_running_loop().time()
    with patch.object(worker_module, "STOP_WAIT_S", 0.2):
        await worker._stop_one("m1")
    assert asyncio.get_running_loop().time() - started < 1.0 and "m1" not in worker.running
    released.set()
    await asyncio.wait({stuck}, timeout=1.0)
    assert stuck.done()


class FakePublisher:
    """Stands in for Publisher: records what each stage saw; release fails on a given batch."""

    def __init__(self, fail_release_at: int | None = None) -> None:
        self.fail_release_at = fail_release_at
        self.released: list[list[int]] = []

    def stage(self, target: Any, msg: Fetched, protocol: str) -> Any:
        return SimpleNamespace(
            raw_bytes=len(msg.raw or b""), ledger=LedgerEntry(id=str(msg.uid), m="m", uid=msg.uid)
        )

    async def release(self, batch: list[Any]) -> list[asyncio.Future[None]]:
        if len(self.released) == self.fail_release_at:
            raise ConnectionError("bus away")
        self.released.append([s.ledger.uid for s in batch])
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return [done]

    async def confirm(self, batch: list[Any], acks: list[asyncio.Future[None]]) -> list[LedgerEntry]:
        await asyncio.gather(*acks)
        return [s.ledger for s in batch]


async def test_the_pipeline_publishes_in_batches_and_in_order() -> None:
    stored: list[list[int]] = []

    async def record(records: list[LedgerEntry]) -> None:
        await asyncio.sleep(0.001)
        stored.append([r.uid or 0 for r in records])

    fake = FakePublisher()
    async with Pipeline(fake, None, "imap", record, size=3, max_bytes=100) as out:  # type: ignore[arg-type]
        for uid in range(1, 9):
            assert await out.add(Fetched(size=10, raw=b"x" * (95 if uid == 5 else 10), uid=uid))
    # batches of 3, one cut early by its bytes (4 and 5 make 105 >= 100), and the rest at the end
    assert stored == [[1, 2, 3], [4, 5], [6, 7, 8]] == fake.released


async def test_a_call_queued_with_then_runs_once_the_batches_before_it_are_stored() -> None:
    """A window's state write waits behind its batches, not in front of the next window's."""
    log: list[object] = []

    async def record(records: list[LedgerEntry]) -> None:
        await asyncio.sleep(0.01)  # a slow ledger write: the call must still wait for it
        log.append([r.uid or 0 for r in records])

    async def window_end(name: str) -> None:
        log.append(name)

    fake = FakePublisher()
    async with Pipeline(fake, None, "imap", record, size=2) as out:  # type: ignore[arg-type]
        for uid in range(1, 4):
            assert await out.add(Fetched(size=1, raw=b"x", uid=uid))
        await out.then(functools.partial(window_end, "first window"))
        assert await out.add(Fetched(size=1, raw=b"x", uid=4))
    # the batches' ledger writes may end in any order; the call comes after both, before the next
    assert sorted(log[:2], key=str) == [[1, 2], [3]] and log[2:] == ["first window", [4]]


async def test_a_failed_call_queued_with_then_is_raised_by_close() -> None:
    stored: list[list[int]] = []

    async def record(records: list[LedgerEntry]) -> None:
        stored.append([r.uid or 0 for r in records])

    async def window_end() -> None:
        raise ConnectionError("database away")

    with pytest.raises(ConnectionError):
        async with Pipeline(FakePublisher(), None, "imap", record, size=1) as out:  # type: ignore[arg-type]
            assert await out.add(Fetched(size=1, raw=b"x", uid=1))
            await out.then(window_end)
            await eventually(lambda: out.failed, "the pipeline failed", timeout=5.0)
            assert not await out.add(Fetched(size=1, raw=b"x", uid=2))
    assert stored == [[1]]


async def test_a_bus_failure_stops_the_reader_and_is_raised_as_it_is() -> None:
    stored: list[list[int]] = []

    async def record(records: list[LedgerEntry]) -> None:
        stored.append([r.uid or 0 for r in records])

    fake = FakePublisher(fail_release_at=1)
    out = Pipeline(fake, None, "imap", record, size=2)  # type: ignore[arg-type]
    added = []
    with pytest.raises(ConnectionError):
        async with out:
            for uid in range(1, 50):
                if not await out.add(Fetched(size=1, raw=b"x", uid=uid)):
                    break
                added.append(uid)
                await asyncio.sleep(0)
    assert stored == [[1, 2]]  # nothing after the failed batch is recorded
    assert len(added) < 49  # the reader was told to stop


async def test_calls_handed_in_while_one_is_in_flight_go_out_together() -> None:
    """The first call goes out alone and at once; the ones handed in meanwhile make the next batch,
    and each caller gets its own result or its own error."""
    sent: list[list[int]] = []
    gate = asyncio.Event()

    async def flush(items: Sequence[int]) -> list[int | Failed]:
        sent.append(list(items))
        if len(sent) == 1:
            await gate.wait()
        return [Failed(ValueError(str(i))) if i == 3 else i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(flush)
    first = asyncio.create_task(batcher(1))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(batcher(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    gate.set()
    assert await first == 10
    results = await asyncio.gather(*rest, return_exceptions=True)
    assert sent == [[1], [2, 3, 4]]
    assert results[0] == 20 and results[2] == 40
    assert isinstance(results[1], ValueError) and str(results[1]) == "3"


async def test_a_failed_batch_fails_each_of_its_callers_and_the_next_batch_still_goes() -> None:
    calls = 0

    async def flush(items: Sequence[str]) -> list[str | Failed]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("database away")
        return list(items)

    batcher: Batcher[str, str] = Batcher(flush)
    with pytest.raises(ConnectionError):
        await batcher("a")
    assert await batcher("b") == "b"


def test_capabilities_come_from_the_greeting_and_the_login_reply_when_the_server_sends_them() -> None:
    greeting = b"* OK [CAPABILITY IMAP4rev1 SASL-IR IDLE AUTH=PLAIN] Dovecot ready."
    assert capability_code(greeting) == ["IMAP4REV1", "SASL-IR", "IDLE", "AUTH=PLAIN"]
    assert capability_code(b"[CAPABILITY IMAP4rev1 IDLE MOVE] Logged in") == ["IMAP4REV1", "IDLE", "MOVE"]
    assert capability_code(b"Logged in") == []  # then the session asks with CAPABILITY
    assert capability_code(b"* OK IMAP ready [CAPABILITY IDLE]") == []  # only as the response code


def test_the_young_generations_threshold_is_set_and_the_others_kept() -> None:
    before = gc.get_threshold()
    try:
        young_collections(0)
        assert gc.get_threshold() == before
        young_collections(12_345)
        assert gc.get_threshold() == (12_345, before[1], before[2])
    finally:
        gc.set_threshold(*before)


async def test_a_change_after_a_quiet_spell_reloads_at_once_and_a_burst_waits_its_turn() -> None:
    nothing: Any = SimpleNamespace()
    worker = Worker(nothing, nothing, reconcile_s=1, poll_floor_s=1, max_mailboxes=1)
    worker._load_s = 0.05  # a reload of 50 ms: the next one 8 x 50 ms after its end at the earliest
    worker._loaded_at = time.monotonic()
    assert worker._pause() == pytest.approx(0.4, abs=0.05)  # right after it: the burst waits
    worker._loaded_at = time.monotonic() - 10.0
    assert worker._pause() == worker_module.SETTLE_S  # after a quiet spell: only the settling time
    worker._load_s, worker._loaded_at = 6.0, time.monotonic()
    assert worker._pause() == worker_module.RELOAD_PAUSE_MAX_S  # a slow reload: capped


def test_a_staged_envelope_is_the_one_make_envelope_builds() -> None:
    """stage builds the envelope without validating it again (its event was validated when built):
    the same JSON as make_envelope's, and it reads back as a valid event."""
    owner = Owner(kind=OwnerKind.USER, id="u1", name="Bench", email="b@example.org")
    ref = MailboxRef(
        mailbox_id="mbx-1", email="b@example.org", owner=owner, profile_id="p1", profile_owner=owner
    )
    publisher = Publisher(RawStore(lambda: None, "raw", 1.0), None, "sync-svc", 500)  # type: ignore[arg-type]
    raw = b"From: A <a@example.org>\r\nTo: b@example.org\r\nSubject: hi\r\nDate: Tue, 01 Dec 2026 10:00:00 +0100\r\n\r\nhello\r\n"
    fetched = Fetched(size=len(raw), raw=raw, uid=7, uidvalidity=3, internal_date=datetime.now(UTC))
    staged = publisher.stage(SimpleNamespace(mailbox_id="mbx-1", ref=ref), fetched, "imap")  # type: ignore[arg-type]
    envelope = staged.envelope
    built = make_envelope(envelope.data, "sync-svc", event_id=envelope.id, occurred_at=envelope.occurred_at)
    assert envelope.to_bytes() == built.to_bytes()
    assert parse_envelope(envelope.to_bytes(), EmailReceived) == built
    assert staged.ledger.id == str(envelope.id) == envelope.correlation_id
