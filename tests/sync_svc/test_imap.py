"""IMAP INBOX sync against the real Dovecot: first sync, increments, restarts, IDLE."""

from __future__ import annotations

import asyncio
import imaplib
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sync_helpers import Bus, Mailbox, append, message

from contracts.email import email_event_id
from mailwarden_servers import DovecotServer, eventually
from sync_svc.documents import LedgerEntry

pytestmark = pytest.mark.integration


def subjects(envs: list[Any]) -> list[str]:
    return sorted(e.data.subject for e in envs)


@pytest.mark.parametrize("first_window", [500, 3, 5])
async def test_first_sync_honours_process_email_from(
    bus: Bus,
    dovecot: DovecotServer,
    new_box: Callable[..., Mailbox],
    sync_service: Any,
    db_name: str,
    first_window: int,
) -> None:
    """Also when the INBOX's first messages are searched first (``first_window`` 3: all older
    than the start, nothing to fetch in it; 5: some of each) and the rest behind them."""
    today = datetime.now(UTC).date()
    box = new_box(process_from=today - timedelta(days=3))
    old = datetime.now(UTC) - timedelta(days=10)
    await asyncio.to_thread(
        append, dovecot, box.user, box.password, [message(i, "old") for i in range(3)], old
    )
    await asyncio.to_thread(append, dovecot, box.user, box.password, [message(i, "new") for i in range(4)])
    async with sync_service(db_name, sync_first_window=first_window) as app:
        await bus.enable(box)
        got = await bus.wait_emails(box, 4)
        await asyncio.sleep(1.0)  # a second pass must not add anything
        got = await bus.emails(box)
        state = await app.state.stores.states.get_state(box.mailbox_id)
    assert subjects(got) == [f"new {i}" for i in range(4)]
    assert state.last_uid == max(e.data.uid or 0 for e in got) and state.messages_seen == 4
    first = got[0].data
    assert first.protocol == "imap" and first.uid is not None and first.uidvalidity is not None
    assert first.from_[0].address == "sender@example.org" and first.preview.startswith("body text")
    assert first.raw is not None and first.raw.size == first.size and not first.too_large


async def test_the_mailboxs_own_start_overrides_its_profiles(
    bus: Bus, dovecot: DovecotServer, new_box: Callable[..., Mailbox], sync_service: Any, db_name: str
) -> None:
    """Profile: from 30 days ago; the mailbox: from 2 days ago (a moment, not a day)."""
    now = datetime.now(UTC)
    box = new_box(process_from=now.date() - timedelta(days=30), received_after=now - timedelta(days=2))
    for subject, age in (("profile only", timedelta(days=5)), ("just before", timedelta(days=2, hours=1))):
        await asyncio.to_thread(append, dovecot, box.user, box.password, [message(0, subject)], now - age)
    await asyncio.to_thread(
        append, dovecot, box.user, box.password, [message(1, "after")], now - timedelta(days=1)
    )
    async with sync_service(db_name):
        await bus.enable(box)
        await bus.wait_emails(box, 1)
        await asyncio.sleep(1.0)  # a second pass must not add anything
        got = await bus.emails(box)
    assert subjects(got) == ["after 1"]


async def test_without_a_start_date_only_new_mail_is_published(
    bus: Bus, dovecot: DovecotServer, new_box: Callable[..., Mailbox], sync_service: Any, db_name: str
) -> None:
    box = new_box()
    await asyncio.to_thread(
        append, dovecot, box.user, box.password, [message(i, "existing") for i in range(2)]
    )
    async with sync_service(db_name) as app:
        await bus.enable(box)
        stores = app.state.stores
        for _ in range(100):
            if (await stores.states.get_state(box.mailbox_id)).last_sync_at:
                break
            await asyncio.sleep(0.1)
        await asyncio.to_thread(append, dovecot, box.user, box.password, [message(9, "arrived")])
        got = await bus.wait_emails(box, 1)
        await asyncio.sleep(0.5)
        got = await bus.emails(box)
    assert subjects(got) == ["arrived 9"]


async def test_incremental_and_no_duplicates_after_a_restart(
    bus: Bus, dovecot: DovecotServer, new_box: Callable[..., Mailbox], sync_service: Any, db_name: str
) -> None:
    box = new_box(process_from=date(2020, 1, 1))
    await asyncio.to_thread(append, dovecot, box.user, box.password, [message(i, "a") for i in range(5)])
    async with sync_service(db_name, sync_idle=False):
        await bus.enable(box)
        assert len(await bus.wait_emails(box, 5)) == 5
        await asyncio.to_thread(append, dovecot, box.user, box.password, [message(i, "b") for i in range(3)])
        assert len(await bus.wait_emails(box, 8)) == 8
    await asyncio.to_thread(append, dovecot, box.user, box.password, [message(i, "c") for i in range(2)])
    async with sync_service(db_name, sync_idle=False):  # a new process on the same database
        got = await bus.wait_emails(box, 10)
        await asyncio.sleep(1.0)
        got = await bus.emails(box)
    assert len(got) == 10 and len({e.id for e in got}) == 10
    assert sorted(e.data.uid or 0 for e in got) == sorted({e.data.uid or 0 for e in got})


async def test_idle_new_message_becomes_an_event_within_two_seconds(
    bus: Bus, dovecot: DovecotServer, new_box: Callable[..., Mailbox], sync_service: Any, db_name: str
) -> None:
    box = new_box()
    async with sync_service(db_name, sync_poll_floor_s=3600.0) as app:  # polling would never be in time
        await bus.enable(box)
        stores = app.state.stores
        for _ in range(100):
            if (await stores.states.get_state(box.mailbox_id)).mode == "idle":
                break
            await asyncio.sleep(0.1)
        latencies = []
        for n in range(3):
            sent = time.monotonic()
            await asyncio.to_thread(append, dovecot, box.user, box.password, [message(n, "live")])
            await bus.wait_emails(box, n + 1, timeout_s=5.0)
            latencies.append(time.monotonic() - sent)
        state = await stores.states.get_state(box.mailbox_id)
    print(f"IDLE new-mail-to-event latencies: {[round(x, 3) for x in latencies]} s")
    assert state.mode == "idle"
    assert max(latencies) < 2.0


@pytest.mark.parametrize("first_window", [500, 5, 2])
async def test_a_first_sync_in_windows_publishes_each_message_once_and_counts_it(
    bus: Bus,
    dovecot: DovecotServer,
    new_box: Callable[..., Mailbox],
    sync_service: Any,
    db_name: str,
    first_window: int,
) -> None:
    """Windows of 3 UIDs, the next one's FETCH sent while the current one streams in (pipelined),
    one message over the size cap among them (its headers come from a FETCH of their own): every
    message once, and the state's watermark and count exact. With a first window smaller than the
    INBOX, the rest is searched behind the first window's FETCH (its answer read by the FETCH's
    reader), the message over the cap in the first window (5) or in the rest (2)."""
    box = new_box(process_from=date(2020, 1, 1))
    big = ("x" * 70 + "\r\n") * 1000  # ~72 KB: over the 64 KB cap
    messages = [message(i, "w", body=big if i == 4 else "body text") for i in range(11)]
    await asyncio.to_thread(append, dovecot, box.user, box.password, messages)
    settings = {"sync_idle": False, "sync_fetch_window": 3, "sync_fetch_batch": 2}
    settings["sync_first_window"] = first_window
    async with sync_service(db_name, sync_max_message_bytes=65_536, **settings) as app:
        await bus.enable(box)
        got = await bus.wait_emails(box, 11)
        stores = app.state.stores

        async def counted() -> Any:
            state = await stores.states.get_state(box.mailbox_id)
            return state if state.messages_seen == 11 and state.last_sync_at else None

        state = await eventually(counted, "the first pass's state written", timeout=20.0)
        got = await bus.emails(box)
    uids = [e.data.uid or 0 for e in got]
    assert len(got) == 11 and len({e.id for e in got}) == 11
    assert state.last_uid == max(uids) and len(set(uids)) == 11
    assert sorted(e.data.subject for e in got) == sorted(f"w {i}" for i in range(11))
    assert [e.data.subject for e in got if e.data.too_large] == ["w 4"]


def _uids(dovecot: DovecotServer, user: str, password: str) -> tuple[int, list[int]]:
    """The INBOX's UIDVALIDITY and UIDs, as another client sees them."""
    imap = imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
    try:
        imap.login(user, password)
        imap.select("INBOX")
        _, validity = imap.response("UIDVALIDITY")
        _, found = imap.uid("SEARCH", "ALL")
        return int(validity[0] or 0), [int(u) for u in (found[0] or b"").split()]
    finally:
        imap.logout()


@pytest.mark.parametrize("first_window", [500, 3])
async def test_a_first_sync_after_a_pass_that_died_skips_what_that_pass_stored(
    bus: Bus,
    dovecot: DovecotServer,
    new_box: Callable[..., Mailbox],
    sync_service: Any,
    db_name: str,
    first_window: int,
) -> None:
    """A first sync killed after storing some ledger batches but before any state write: the next
    pass (a first sync again) looks its windows up and publishes only the rest, also long after
    JetStream's duplicate window (here: events it would have sent again are counted on the bus).
    A first sync of a mailbox with nothing in the ledger skips those lookups."""
    box = new_box(process_from=date(2020, 1, 1))
    await asyncio.to_thread(append, dovecot, box.user, box.password, [message(i, "k") for i in range(8)])
    uidvalidity, uids = await asyncio.to_thread(_uids, dovecot, box.user, box.password)
    done = [uids[0], uids[1], uids[5]]
    settings = {"sync_idle": False, "sync_fetch_window": 3, "sync_first_window": first_window}
    async with sync_service(db_name, **settings) as app:
        stores = app.state.stores
        await stores.ledger.record_published(
            [
                LedgerEntry(id=str(email_event_id(box.mailbox_id, uidvalidity, u)), m=box.mailbox_id, uid=u)
                for u in done
            ]
        )
        await bus.enable(box)
        await bus.wait_emails(box, 5)

        async def passed() -> Any:
            state = await stores.states.get_state(box.mailbox_id)
            return state if state.last_sync_at else None

        state = await eventually(passed, "the first pass's state written", timeout=20.0)
        got = await bus.emails(box)
    assert sorted(e.data.uid or 0 for e in got) == sorted(set(uids) - set(done))
    assert state.messages_seen == 8 and state.last_uid == max(uids)
