"""A UIDVALIDITY change re-baselines: what was published is recognised, only new mail is published."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from sync_helpers import Bus, Mailbox, append, message

from mailwarden_servers import DovecotServer
from mailwarden_servers.dovecot import doveadm_binary

pytestmark = pytest.mark.integration


def new_uidvalidity(dovecot: DovecotServer, user: str, value: int) -> None:
    cmd = [doveadm_binary(), "-c", str(dovecot.config_path), "mailbox", "update", "-u", user]
    subprocess.run([*cmd, "--uid-validity", str(value), "INBOX"], check=True, capture_output=True, timeout=30)


async def test_uidvalidity_reset_publishes_nothing_twice(
    bus: Bus, dovecot: DovecotServer, new_box: Callable[..., Mailbox], sync_service: Any, db_name: str
) -> None:
    box = new_box(process_from=date(2020, 1, 1))
    await asyncio.to_thread(append, dovecot, box.user, box.password, [message(i, "before") for i in range(5)])
    async with sync_service(db_name, sync_idle=False) as app:
        await bus.enable(box)
        first = await bus.wait_emails(box, 5)
        old = first[0].data.uidvalidity
        assert old is not None
        await asyncio.to_thread(new_uidvalidity, dovecot, box.user, old + 1000)
        await asyncio.to_thread(append, dovecot, box.user, box.password, [message(1, "after")])
        got = await bus.wait_emails(box, 6)
        await asyncio.sleep(1.0)  # more polls: still nothing twice
        got = await bus.emails(box)
        state = await app.state.stores.states.get_state(box.mailbox_id)
    assert len(got) == 6
    assert sorted(e.data.subject for e in got) == sorted([f"before {i}" for i in range(5)] + ["after 1"])
    assert got[-1].data.uidvalidity == old + 1000 and state.uidvalidity == old + 1000
