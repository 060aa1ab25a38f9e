"""Sync failures are classified and published once per episode; recovery closes the episode."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from sync_helpers import Bus, Mailbox, append, message

from contracts.email import MailboxSyncFailed, MailboxSyncRecovered
from mailwarden_servers import DovecotServer

pytestmark = pytest.mark.integration


async def test_login_failure_is_one_event_per_episode_then_recovered(
    bus: Bus, dovecot: DovecotServer, new_box: Callable[..., Mailbox], sync_service: Any, db_name: str
) -> None:
    box = new_box(process_from=date(2020, 1, 1))
    await asyncio.to_thread(append, dovecot, box.user, box.password, [message(1)])
    async with sync_service(db_name, sync_idle=False) as app:
        await bus.enable(box, password="not-the-password")
        stores = app.state.stores
        for _ in range(100):  # several failed attempts (backoff 0.3 s → 1 s)
            state = await stores.states.get_state(box.mailbox_id)
            if state.episode is not None and state.episode.failures >= 3:
                break
            await asyncio.sleep(0.1)
        events = await bus.sync_events(box)
        assert [type(e.data) for e in events] == [MailboxSyncFailed]
        failed = events[0].data
        assert failed.error.code.value == "auth_failed" and failed.error.step == "login"
        assert failed.error.scope == "mailbox" and not failed.error.transient
        assert await bus.emails(box) == []

        await bus.enable(box)  # the owner fixed the password; Test & Enable sealed the new one
        await bus.wait_emails(box, 1)
        for _ in range(50):
            events = await bus.sync_events(box)
            if len(events) == 2:
                break
            await asyncio.sleep(0.1)
        for _ in range(50):  # the pass writes last_error None just after it published the recovery
            state = await stores.states.get_state(box.mailbox_id)
            if state.episode is None and state.last_error is None:
                break
            await asyncio.sleep(0.1)
    assert [type(e.data) for e in events] == [MailboxSyncFailed, MailboxSyncRecovered]
    recovered = events[1].data
    assert isinstance(recovered, MailboxSyncRecovered)
    assert recovered.episode_id == failed.episode_id and recovered.failures >= 3
    assert state.episode is None and state.last_error is None


async def test_a_password_is_never_in_events_state_or_logs(
    bus: Bus,
    dovecot: DovecotServer,
    new_box: Callable[..., Mailbox],
    sync_service: Any,
    db_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    box = new_box(process_from=date(2020, 1, 1))
    canary = "canary-Pw-7f3e9"
    caplog.set_level("DEBUG")
    async with sync_service(db_name, sync_idle=False) as app:
        await bus.enable(box, password=canary)
        stores = app.state.stores
        for _ in range(50):
            if (await stores.states.get_state(box.mailbox_id)).episode:
                break
            await asyncio.sleep(0.1)
        dumped = [str(d) async for d in stores.states.collection.find({})] + [
            str(d) async for d in stores.read.mailboxes.find({})
        ]
    events = await bus.sync_events(box)
    assert events
    for text in [*dumped, *(e.to_bytes().decode() for e in events), caplog.text]:
        assert canary not in text
