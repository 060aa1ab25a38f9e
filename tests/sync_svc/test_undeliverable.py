"""EmailRejected moves the message to the Undeliverable folder when the profile says so."""

from __future__ import annotations

import asyncio
import imaplib
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from sync_helpers import Bus, Mailbox, append, message

from contracts.email import EmailRejected
from mailwarden_servers import DovecotServer

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


async def test_rejected_message_moves_to_undeliverable_only_when_the_profile_says_so(
    bus: Bus, dovecot: DovecotServer, new_box: Callable[..., Mailbox], sync_service: Any, db_name: str
) -> None:
    moving = new_box(process_from=date(2020, 1, 1))
    keeping = new_box(process_from=date(2020, 1, 1))
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
        for _ in range(100):
            counts = await asyncio.to_thread(folder_counts, dovecot, moving.user, moving.password)
            if counts["Undeliverable"] == 1:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # more polls: the expunge publishes nothing new
        kept = await asyncio.to_thread(folder_counts, dovecot, keeping.user, keeping.password)
        after = await bus.emails(moving)
    assert counts == {"INBOX": 2, "Undeliverable": 1}
    assert kept == {"INBOX": 3, "Undeliverable": -1}  # no folder created for a profile without the option
    assert len(after) == 3
