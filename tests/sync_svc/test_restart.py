"""A NATS or database restart in the middle of a first sync: nothing lost, nothing stored twice."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path

import nats
import pytest
from sync_helpers import NAMES, Bus, Mailbox, append, message, settings_for

from mailwarden_mailnet.resolve import StaticResolver
from mailwarden_servers import DovecotServer, MongoWireServer, NatsServer, TestCertificates
from sync_svc.app import create_app

pytestmark = pytest.mark.integration
MESSAGES = 600


@pytest.mark.parametrize("restarted", ["nats", "database"])
async def test_a_restart_mid_sync_loses_nothing_and_stores_nothing_twice(
    dovecot: DovecotServer,
    certs: TestCertificates,
    new_box: Callable[..., Mailbox],
    workdir: Path,
    restarted: str,
) -> None:
    box = new_box(process_from=date(2020, 1, 1))
    await asyncio.to_thread(
        append, dovecot, box.user, box.password, [message(i, "r") for i in range(MESSAGES)]
    )
    tag = uuid.uuid4().hex[:6]
    with NatsServer(workdir / f"nats-{tag}") as server, MongoWireServer(workdir / f"mongo-{tag}") as mongo:
        nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
        bus = Bus(nc, dovecot)
        await bus.serve_logins()
        settings = settings_for(
            server.url, mongo.uri, f"r_{tag}", certs, sync_idle=False, sync_fetch_batch=50
        )
        app = create_app(settings, resolver=StaticResolver(NAMES))

        async def stored() -> int:
            subject = f"mailwarden.email.received.{box.mailbox_id}"
            info = await bus.js.stream_info("MW_EMAIL", subjects_filter=subject)
            return sum((info.state.subjects or {}).values())

        async with app.router.lifespan_context(app):
            await bus.enable(box)
            for _ in range(300):
                if await stored() >= MESSAGES // 3:
                    break
                await asyncio.sleep(0.05)
            at_restart = await stored()
            await asyncio.to_thread(server.restart if restarted == "nats" else mongo.restart)
            count = 0
            for _ in range(600):
                try:
                    count = await stored()
                except Exception:  # the test's own client is reconnecting
                    count = 0
                if count >= MESSAGES:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)
            got = await bus.emails(box)
        await nc.close()
    ids = [e.id for e in got]
    print(f"restarted at {at_restart}/{MESSAGES} stored; after: {len(ids)} stored, {len(set(ids))} distinct")
    assert 0 < at_restart < MESSAGES, "not mid-sync"
    assert len(ids) == MESSAGES and len(set(ids)) == MESSAGES
