"""kill -9 of a sync-svc process in the middle of a first sync: every message published exactly once.

sync-svc runs as its own process (uvicorn, configured by the environment as in production). It is
killed with SIGKILL after part of the INBOX is published; a second process takes the mailbox over
once the lease expires and finishes. JetStream keeps what was published: distinct event ids must
equal the messages, with no duplicate stored.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from sync_helpers import TRANSIT_TEXT, Bus, Mailbox, append, message

from mailwarden_servers import DovecotServer, TestCertificates
from mailwarden_servers.devstack import ServiceProcess, ServiceSpec
from mailwarden_servers.ports import free_port

pytestmark = pytest.mark.integration
MESSAGES = 600
SPEC = ServiceSpec("sync-svc", "sync_svc.app:create_app", 0)


async def stored(bus: Bus, box: Mailbox) -> int:
    info = await bus.js.stream_info("MW_EMAIL", subjects_filter=f"mailwarden.email.received.{box.mailbox_id}")
    return sum((info.state.subjects or {}).values())


async def test_kill_9_mid_sync_publishes_every_message_exactly_once(
    bus: Bus,
    dovecot: DovecotServer,
    certs: TestCertificates,
    new_box: Callable[..., Mailbox],
    sync_nats_url: str,
    mongo_uri: str,
    workdir: Path,
) -> None:
    box = new_box(process_from=date(2020, 1, 1))
    await asyncio.to_thread(
        append, dovecot, box.user, box.password, [message(i, "k") for i in range(MESSAGES)]
    )
    env = {
        "MW_NATS_URL": sync_nats_url,
        "MW_MONGODB_URI": mongo_uri,
        "MW_MONGODB_DB": f"k_{uuid.uuid4().hex[:8]}",
        "MW_LOG_SETUP": "false",
        "MW_TRANSIT_KEYS": TRANSIT_TEXT,
        "MW_SYNC_ALLOW_NETWORKS": "127.0.0.0/8",
        "MW_SYNC_CA_FILE": str(certs.ca),
        "MW_SYNC_LEASE_TTL_S": "3",
        "MW_SYNC_RECONCILE_S": "0.2",
        "MW_SYNC_FETCH_BATCH": "50",
        "MW_SYNC_POLL_FLOOR_S": "0.5",
        "MW_SYNC_IDLE": "false",
    }
    bus.host = "127.0.0.1"  # the service resolves names itself: no test resolver across processes
    logs = workdir / f"kill-{box.mailbox_id}"
    first = ServiceProcess(logs / "a", SPEC, free_port(), {**env, "MW_INSTANCE": "worker-a"})
    second = ServiceProcess(logs / "b", SPEC, free_port(), {**env, "MW_INSTANCE": "worker-b"})
    try:
        await asyncio.to_thread(first.start)
        await bus.enable(box)
        for _ in range(300):
            if await stored(bus, box) >= MESSAGES // 3:
                break
            await asyncio.sleep(0.05)
        at_kill = await stored(bus, box)
        await asyncio.to_thread(first.kill)
        assert 0 < at_kill < MESSAGES, f"{at_kill} stored when killed: not mid-sync"
        await asyncio.to_thread(second.start)
        for _ in range(600):
            if await stored(bus, box) >= MESSAGES:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # more passes of the second process: still nothing twice
        got = await bus.emails(box)
    finally:
        await asyncio.to_thread(first.kill)
        await asyncio.to_thread(second.stop)
    ids = [e.id for e in got]
    uids = sorted(e.data.uid or 0 for e in got)
    print(
        f"killed at {at_kill}/{MESSAGES} stored; after takeover {len(ids)} stored, {len(set(ids))} distinct"
    )
    assert len(set(ids)) == MESSAGES and len(ids) == MESSAGES
    assert uids == list(range(uids[0], uids[0] + MESSAGES))
