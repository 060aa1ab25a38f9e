"""Sync state and controls over HTTP and NATS request-reply; mailboxes spread over workers by leases."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sync_helpers import Bus, Mailbox, append, message, rpc

from contracts.email import MailboxResyncRequested, MailboxSyncPaused
from mailwarden_runtime.audit import AuditQuery, audit_trail
from mailwarden_runtime.auth import bearer_header
from mailwarden_runtime.auth.bootstrap import issue_on, issue_token
from mailwarden_servers import DovecotServer, eventually

pytestmark = pytest.mark.integration


async def test_state_pause_resume_and_resync(
    bus: Bus, dovecot: DovecotServer, new_box: Callable[..., Mailbox], sync_service: Any, db_name: str
) -> None:
    today = datetime.now(UTC).date()
    box = new_box(process_from=today)
    week_ago = datetime.now(UTC) - timedelta(days=7)
    await asyncio.to_thread(append, dovecot, box.user, box.password, [message(1, "old")], week_ago)
    await asyncio.to_thread(append, dovecot, box.user, box.password, [message(2, "today")])
    async with sync_service(db_name, sync_idle=False) as app:
        await bus.enable(box)
        await bus.wait_emails(box, 1)
        operator = f"operator-{box.mailbox_id}"
        auth = bearer_header(await issue_on(bus.nc, operator))
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sync", headers=auth)
        async with http:

            async def first_pass_written() -> Any:
                # the pass publishes the email before it writes its state (mode, counters)
                state = (await http.get(f"/mailboxes/{box.mailbox_id}/sync")).json()
                return state if state["mode"] is not None and state["messages_seen"] == 1 else None

            state = await eventually(first_pass_written, "the first pass's state written", timeout=20.0)
            assert state["synced"] and state["protocol"] == "imap" and state["messages_seen"] == 1
            assert state["mode"] == "poll" and state["uidvalidity"] and state["last_sync_at"]

            paused = await rpc(bus, "pause", {"mailbox_id": box.mailbox_id})
            assert paused["ok"] and paused["result"]["paused"] and not paused["result"]["synced"]
            await asyncio.sleep(0.6)  # the worker stops the mailbox's task
            assert box.mailbox_id not in app.state.worker.running
            await asyncio.to_thread(append, dovecot, box.user, box.password, [message(3, "while paused")])
            await asyncio.sleep(1.0)
            assert len(await bus.emails(box)) == 1

            resumed = await http.post(f"/mailboxes/{box.mailbox_id}/sync/resume")
            assert resumed.status_code == 200 and not resumed.json()["paused"]
            assert len(await bus.wait_emails(box, 2)) == 2
            # mailbox-svc learns both (it re-tests a paused mailbox on the org's schedule).
            announced = await bus.stored("mailwarden.sync.paused", MailboxSyncPaused)
            mine = [e.data.paused for e in announced if e.data.mailbox_id == box.mailbox_id]
            assert mine == [True, False]

            resync = await http.post(
                f"/mailboxes/{box.mailbox_id}/sync/resync",
                json={"from_date": str(today - timedelta(days=30))},
            )
            assert resync.status_code == 200 and resync.json()["resync_from"]
            got = await bus.wait_emails(box, 3)
            await asyncio.sleep(1.0)
            got = await bus.emails(box)
            assert sorted(e.data.subject for e in got) == ["old 1", "today 2", "while paused 3"]

            # each control names its caller: in the state, in its event and in the audit trail
            who = f"token:{operator}"
            assert (await app.state.stores.states.get_state(box.mailbox_id)).controlled_by == who
            resyncs = await bus.stored("mailwarden.sync.resync_requested", MailboxResyncRequested)
            (asked,) = [e for e in resyncs if e.data.mailbox_id == box.mailbox_id]
            assert asked.actor == who and asked.data.from_date == today - timedelta(days=30)
            pauses = [e for e in announced if e.data.mailbox_id == box.mailbox_id]
            assert [e.actor for e in pauses] == ["token:admin", who]  # pause over NATS, resume over HTTP
            trail = await audit_trail(bus.nc, AuditQuery(actor=who, since_hours=1, limit=1000))
            assert {(e.event, e.ids["mailbox_id"]) for e in trail.items} >= {
                ("MailboxSyncPaused", box.mailbox_id),
                ("MailboxResyncRequested", box.mailbox_id),
            }

            missing = await http.get("/mailboxes/nobody/sync")
            assert missing.status_code == 404
            bad = await rpc(bus, "resync", {"mailbox_id": box.mailbox_id, "from_date": "yesterday"})
            assert not bad["ok"] and bad["status"] == 422 and bad["errors"][0]["field"] == "from_date"


async def test_mailboxes_spread_over_workers_and_a_stopped_workers_mailboxes_are_taken_over(
    bus: Bus, dovecot: DovecotServer, new_box: Callable[..., Mailbox], sync_service: Any, db_name: str
) -> None:
    boxes = [new_box(process_from=date(2020, 1, 1)) for _ in range(4)]
    for box in boxes:
        await asyncio.to_thread(append, dovecot, box.user, box.password, [message(1, box.mailbox_id)])
    async with sync_service(db_name, instance="worker-a", sync_idle=False) as a:
        async with sync_service(db_name, instance="worker-b", sync_idle=False) as b:
            for box in boxes:
                await bus.enable(box)
            for box in boxes:
                await bus.wait_emails(box, 1)
            for _ in range(50):
                held = (set(a.state.worker.running), set(b.state.worker.running))
                if len(held[0]) == 2 and len(held[1]) == 2:
                    break
                await asyncio.sleep(0.2)
            assert len(held[0]) == 2 and len(held[1]) == 2 and not held[0] & held[1]
        # worker-b stopped: its mailboxes go to worker-a
        for _ in range(50):
            if len(a.state.worker.running) == 4:
                break
            await asyncio.sleep(0.2)
        assert len(a.state.worker.running) == 4
        for box in boxes:
            await asyncio.to_thread(append, dovecot, box.user, box.password, [message(2, box.mailbox_id)])
        for box in boxes:
            got = await bus.wait_emails(box, 2)
            assert len(got) == 2 and len({e.id for e in got}) == 2


async def test_a_killed_workers_mailboxes_are_taken_over_within_the_lease_ttl(
    bus: Bus, dovecot: DovecotServer, new_box: Callable[..., Mailbox], sync_service: Any, db_name: str
) -> None:
    box = new_box(process_from=date(2020, 1, 1))
    async with sync_service(db_name, instance="worker-a", sync_idle=False) as a:
        await bus.enable(box)
        for _ in range(50):
            if a.state.worker.running:
                break
            await asyncio.sleep(0.1)
        # "kill -9": the worker and its sessions stop dead; nothing is released, its lease just expires.
        worker = a.state.worker
        assert worker._task is not None
        worker._task.cancel()
        for run in worker.running.values():
            run.task.cancel()
        worker.running.clear()
        worker.leases.held.clear()
        killed_at = asyncio.get_running_loop().time()
        async with sync_service(db_name, instance="worker-b", sync_idle=False) as b:
            for _ in range(100):
                if b.state.worker.running:
                    break
                await asyncio.sleep(0.1)
            taken_after = asyncio.get_running_loop().time() - killed_at
            await asyncio.to_thread(append, dovecot, box.user, box.password, [message(1, "after the kill")])
            got = await bus.wait_emails(box, 1)
    assert len(got) == 1
    assert taken_after <= 3.0 + 1.0, f"taken over after {taken_after:.1f} s (lease TTL 3 s)"


async def test_cli_mail_tail_and_status(
    bus: Bus,
    dovecot: DovecotServer,
    new_box: Callable[..., Mailbox],
    sync_service: Any,
    db_name: str,
    sync_nats_url: str,
) -> None:
    box = new_box(process_from=date(2020, 1, 1))
    await asyncio.to_thread(append, dovecot, box.user, box.password, [message(i, "cli") for i in range(2)])
    mailwarden = Path(sys.executable).with_name("mailwarden")
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", "TERM": "dumb", "MW_NATS_URL": sync_nats_url}
    env |= {"MW_TOKEN": await issue_token(sync_nats_url), "MW_TOKEN_FILE": os.devnull}

    async def cli(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            str(mailwarden), *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        assert proc.returncode == 0, err.decode()
        return out.decode()

    async with sync_service(db_name, sync_idle=False) as app:
        await bus.enable(box)
        await bus.wait_emails(box, 2)
        for _ in range(50):  # the batch's watermark is written just after its events are stored
            if (await app.state.stores.states.get_state(box.mailbox_id)).messages_seen == 2:
                break
            await asyncio.sleep(0.1)
        tail = await cli("sync", "tail", "--mailbox", box.mailbox_id, "--last", "2", "--count", "2")
        status = json.loads(await cli("sync", "status", box.mailbox_id, "--json"))
    lines = [ln for ln in tail.splitlines() if ln.strip()]
    assert len(lines) == 2 and all(box.mailbox_id in ln and "sender@example.org" in ln for ln in lines)
    assert "cli 0" in lines[0] and "cli 1" in lines[1]
    assert status["messages_seen"] == 2 and status["synced"] and status["protocol"] == "imap"


@pytest.mark.parametrize(("shared", "idling"), [(True, 2), (False, 4)])
async def test_the_profiles_host_limit_holds_across_workers(
    bus: Bus,
    dovecot: DovecotServer,
    new_box: Callable[..., Mailbox],
    sync_service: Any,
    db_name: str,
    shared: bool,
    idling: int,
) -> None:
    """4 mailboxes of one host, at most 3 connections: idlers may hold 2 (a KV lease each), so 2
    sessions idle and the other 2 poll on the slot left. Per process only (shared off), each worker
    lets its own 2 idle: 4 sessions on a host that allows 3."""
    boxes = [new_box(process_from=date(2020, 1, 1)) for _ in range(4)]
    settings = {"sync_shared_host_limits": shared, "sync_host_lease_ttl_s": 6.0}
    async with (
        sync_service(db_name, instance="worker-a", **settings) as a,
        sync_service(db_name, instance="worker-b", **settings) as b,
    ):
        for box in boxes:
            await bus.enable(box, max_concurrent_connections=3)
        stores = a.state.stores

        async def modes() -> list[str]:
            return [str((await stores.states.get_state(box.mailbox_id)).mode) for box in boxes]

        for _ in range(100):
            if "None" not in await modes() and all(len(w.state.worker.running) == 2 for w in (a, b)):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # every session settled in its mode
        got = await modes()
        for box in boxes:  # polling mailboxes still get their mail, within the limit
            await asyncio.to_thread(append, dovecot, box.user, box.password, [message(1, box.mailbox_id)])
        for box in boxes:
            assert len(await bus.wait_emails(box, 1)) == 1
    assert sorted(got).count("idle") == idling, got
    assert sorted(got).count("poll") == 4 - idling, got
