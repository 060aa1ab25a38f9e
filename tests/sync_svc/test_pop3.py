"""POP3 sync: a UIDL ledger, nothing published twice, nothing deleted unless the profile says so."""

from __future__ import annotations

import asyncio
import poplib
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from sync_helpers import Bus, Mailbox, append, message

from contracts.models import IncomingProtocol
from mailwarden_servers import DovecotServer

pytestmark = pytest.mark.integration


def pop3_count(dovecot: DovecotServer, user: str, password: str) -> int:
    pop = poplib.POP3("127.0.0.1", dovecot.pop3_port)
    try:
        pop.user(user)
        pop.pass_(password)
        return int(pop.stat()[0])
    finally:
        pop.quit()


async def test_uidl_ledger_no_duplicates_across_restarts_and_nothing_deleted(
    bus: Bus, dovecot: DovecotServer, new_box: Callable[..., Mailbox], sync_service: Any, db_name: str
) -> None:
    box = new_box(protocol=IncomingProtocol.POP3, process_from=date(2020, 1, 1))
    await asyncio.to_thread(append, dovecot, box.user, box.password, [message(i, "pop") for i in range(4)])
    async with sync_service(db_name):
        await bus.enable(box)
        assert len(await bus.wait_emails(box, 4)) == 4
        await asyncio.to_thread(append, dovecot, box.user, box.password, [message(9, "later")])
        assert len(await bus.wait_emails(box, 5)) == 5
    async with sync_service(db_name):
        await asyncio.sleep(1.5)  # several polls of a new process
    got = await bus.emails(box)
    assert len(got) == 5 and len({e.id for e in got}) == 5
    assert all(e.data.protocol == "pop3" and e.data.uidl and e.data.uid is None for e in got)
    assert await asyncio.to_thread(pop3_count, dovecot, box.user, box.password) == 5


async def test_delete_after_sync_only_when_the_profile_says_so(
    bus: Bus, dovecot: DovecotServer, new_box: Callable[..., Mailbox], sync_service: Any, db_name: str
) -> None:
    box = new_box(protocol=IncomingProtocol.POP3, process_from=date(2020, 1, 1))
    await asyncio.to_thread(append, dovecot, box.user, box.password, [message(i, "gone") for i in range(3)])
    async with sync_service(db_name):
        await bus.enable(box, pop3_delete_after_sync=True)
        assert len(await bus.wait_emails(box, 3)) == 3
        for _ in range(50):
            if await asyncio.to_thread(pop3_count, dovecot, box.user, box.password) == 0:
                break
            await asyncio.sleep(0.1)
    assert await asyncio.to_thread(pop3_count, dovecot, box.user, box.password) == 0


async def test_moving_from_pop3_to_imap_publishes_nothing_twice(
    bus: Bus, dovecot: DovecotServer, new_box: Callable[..., Mailbox], sync_service: Any, db_name: str
) -> None:
    box = new_box(protocol=IncomingProtocol.POP3, process_from=date(2020, 1, 1))
    await asyncio.to_thread(append, dovecot, box.user, box.password, [message(i, "pop") for i in range(3)])
    async with sync_service(db_name, sync_idle=False) as app:
        await bus.enable(box)
        assert len(await bus.wait_emails(box, 3)) == 3
        await bus.switch_protocol(box, IncomingProtocol.IMAP)
        stores = app.state.stores
        for _ in range(100):
            if (await stores.states.get_state(box.mailbox_id)).uidvalidity:
                break
            await asyncio.sleep(0.1)
        await asyncio.to_thread(append, dovecot, box.user, box.password, [message(7, "imap")])
        got = await bus.wait_emails(box, 4)
        await asyncio.sleep(1.0)
        got = await bus.emails(box)
    assert sorted(e.data.subject for e in got) == ["imap 7", "pop 0", "pop 1", "pop 2"]
    assert [e.data.protocol for e in got] == ["pop3", "pop3", "pop3", "imap"]
