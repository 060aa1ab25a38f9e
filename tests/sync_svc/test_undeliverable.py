"""EmailRejected moves the message to the Undeliverable folder when the profile says so."""

from __future__ import annotations

import asyncio
import imaplib
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sync_helpers import Bus, Mailbox, append, message, rpc, running_bus

from contracts.email import EmailRejected, EmailTracked
from mailwarden_servers import DovecotServer, TestCertificates

# Dovecot accepts MOVE whatever it advertises; sync-svc goes by the advertised capabilities.
WITHOUT_MOVE = (
    "\nimap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ UIDPLUS NAMESPACE\n"
)

pytestmark = pytest.mark.integration


def folder_counts(dovecot: DovecotServer, user: str, password: str) -> dict[str, int]:
    imap = imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
    try:
        imap.login(user, password)
        counts = {}
        for name in ("INBOX", "Undeliverable"):
            status, data = imap.status(name, "(MESSAGES)")
            counts[name] = int(data[0].split()[-1].rstrip(b")")) if status == "OK" else -1
        return counts
    finally:
        imap.logout()


@pytest.fixture(scope="module")
def dovecot_without_move(workdir: Path, certs: TestCertificates) -> Iterator[DovecotServer]:
    with DovecotServer(workdir / "dovecot-no-move", certs, {}, extra_config=WITHOUT_MOVE) as server:
        yield server


@pytest.fixture
async def bus_without_move(sync_nats_url: str, dovecot_without_move: DovecotServer) -> AsyncIterator[Bus]:
    async with running_bus(sync_nats_url, dovecot_without_move) as bus:
        yield bus


def box_on(dovecot: DovecotServer) -> Mailbox:
    user = f"user-{uuid.uuid4().hex[:10]}"
    dovecot.add_user(user, f"{user}-pw")
    return Mailbox(f"mbx-{uuid.uuid4().hex[:10]}", user, f"{user}-pw", process_from=date(2020, 1, 1))


async def test_rejected_message_moves_to_undeliverable_only_when_the_profile_says_so(
    bus: Bus,
    dovecot: DovecotServer,
    sync_service: Any,
    db_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await rejected_moves(bus, dovecot, sync_service, db_name, caplog, "MOVE")


async def test_without_move_it_copies_flags_deleted_and_expunges_that_uid(
    bus_without_move: Bus,
    dovecot_without_move: DovecotServer,
    sync_service: Any,
    db_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await rejected_moves(bus_without_move, dovecot_without_move, sync_service, db_name, caplog, "COPY")


async def rejected_moves(
    bus: Bus,
    dovecot: DovecotServer,
    sync_service: Any,
    db_name: str,
    caplog: pytest.LogCaptureFixture,
    via: str,
) -> None:
    caplog.set_level("INFO", logger="sync_svc.undeliverable")
    moving, keeping = box_on(dovecot), box_on(dovecot)
    # A message the user flagged \Deleted themselves stays: only the rejected UID is expunged.
    await asyncio.to_thread(flag_one_deleted, dovecot, moving.user, moving.password)
    for box in (moving, keeping):
        await asyncio.to_thread(
            append, dovecot, box.user, box.password, [message(i, "order") for i in range(3)]
        )
    async with sync_service(db_name, sync_idle=False):
        await bus.enable(moving, move_failed_to_undeliverable=True)
        await bus.enable(keeping)
        got = {box.mailbox_id: await bus.wait_emails(box, 3) for box in (moving, keeping)}
        for box in (moving, keeping):
            second = got[box.mailbox_id][1]
            await bus.publish(
                EmailRejected(mailbox_id=box.mailbox_id, email_id=second.id, system="crm", reason="no match")
            )
        counts = await one_moved(dovecot, moving)
        await asyncio.sleep(1.0)  # more polls: the expunge publishes nothing new
        kept = await asyncio.to_thread(folder_counts, dovecot, keeping.user, keeping.password)
        after = await bus.emails(moving)
    assert counts == {"INBOX": 3, "Undeliverable": 1}  # 3 synced, 1 moved, the user's flagged one kept
    assert kept == {"INBOX": 3, "Undeliverable": -1}  # no folder created for a profile without the option
    assert len(after) == 3
    assert [r.via for r in caplog.records if r.getMessage() == "moved a rejected message"] == [via]  # type: ignore[attr-defined]


async def one_moved(dovecot: DovecotServer, box: Mailbox) -> dict[str, int]:
    """The folder counts once one message is in Undeliverable (or after 10 s)."""
    for _ in range(100):
        counts = await asyncio.to_thread(folder_counts, dovecot, box.user, box.password)
        if counts["Undeliverable"] == 1:
            break
        await asyncio.sleep(0.1)
    return counts


def flag_one_deleted(dovecot: DovecotServer, user: str, password: str) -> None:
    """One message in the INBOX the user flagged \\Deleted, older than "process email from"."""
    imap = imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
    try:
        imap.login(user, password)
        stamp = imaplib.Time2Internaldate(946_684_800)  # 2000-01-01: never synced
        imap.append("INBOX", "(\\Deleted)", stamp, message(99, "flagged by the user"))
    finally:
        imap.logout()


async def test_a_tracked_message_is_counted_once_and_never_moved(
    bus: Bus, dovecot: DovecotServer, sync_service: Any, db_name: str
) -> None:
    """EmailTracked (twice, and from a second system) counts the message once; a rejection of the
    tracked message does not move it, one of an untracked message does; the state shows both."""
    box = box_on(dovecot)
    await asyncio.to_thread(append, dovecot, box.user, box.password, [message(i, "case") for i in range(3)])
    async with sync_service(db_name, sync_idle=False):
        await bus.enable(box, move_failed_to_undeliverable=True)
        first, second, _ = await bus.wait_emails(box, 3)
        for system in ("crm", "crm", "erp"):
            await bus.publish(EmailTracked(mailbox_id=box.mailbox_id, email_id=first.id, system=system))
        await bus.publish(EmailTracked(mailbox_id=box.mailbox_id, email_id=uuid.uuid4(), system="crm"))

        async def state() -> dict[str, Any]:
            reply = await rpc(bus, "state", {"mailbox_id": box.mailbox_id})
            assert reply["ok"], reply
            result: dict[str, Any] = reply["result"]
            return result

        for _ in range(100):  # the tracking lands before the rejections are sent
            if (await state())["messages_tracked"] == 1:
                break
            await asyncio.sleep(0.1)
        for email in (first, second):
            await bus.publish(
                EmailRejected(mailbox_id=box.mailbox_id, email_id=email.id, system="erp", reason="no match")
            )
        await one_moved(dovecot, box)
        await asyncio.sleep(1.0)  # the tracked message's rejection had its time to move it too
        counts = await asyncio.to_thread(folder_counts, dovecot, box.user, box.password)
        got = await state()
    assert counts == {"INBOX": 2, "Undeliverable": 1}
    assert (got["messages_seen"], got["messages_tracked"], got["messages_rejected"]) == (3, 1, 2)
