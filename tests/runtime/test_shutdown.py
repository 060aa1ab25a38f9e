"""``ServiceRuntime.stop()`` ends within ``MW_SHUTDOWN_TIMEOUT_S`` whatever NATS and the database do.

A service with everything the runtime runs (a consumer with a handler in flight, request-reply,
the outbox relay with an event waiting) is stopped (a) normally, (b) with nats-server killed,
(c) with the database killed and (d) with NATS behind a peer that accepts and then stays silent.
Each prints its stop time (the figures in docs/reliability.md come from `make chaos`, on processes).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from contracts import Envelope, MailboxApproved
from mailwarden_runtime.consumer import ConsumerOptions
from mailwarden_runtime.outbox import new_document_outbox, outbox_entry
from mailwarden_runtime.service import ServiceRuntime
from mailwarden_runtime.settings import ServiceSettings
from mailwarden_servers import MongoWireServer, NatsServer, SilencingProxy

pytestmark = pytest.mark.integration

BUDGET_S = 8.0  # MW_SHUTDOWN_TIMEOUT_S of the service under test
SLACK_S = 1.5  # a loaded machine's scheduling, not a step of the stop


class Ping(BaseModel):
    pass


@dataclass
class Running:
    runtime: ServiceRuntime
    nats: NatsServer
    mongo: MongoWireServer
    proxy: SilencingProxy


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Callable[[], Running]]:
    nats_server = NatsServer(tmp_path / "nats").start()
    mongo = MongoWireServer(tmp_path / "mongo", in_memory=True).start()
    proxy = await SilencingProxy(nats_server.port).start()
    started: list[Running] = []

    def make() -> Running:
        settings = ServiceSettings(
            nats_url=proxy.url,
            mongodb_uri=mongo.uri,
            mongodb_db=f"t_{uuid.uuid4().hex[:10]}",
            log_setup=False,
            shutdown_timeout_s=BUDGET_S,
            shutdown_grace_s=1.0,
        )
        running = Running(
            ServiceRuntime("stop-svc", settings, outbox_collections=["things"]), nats_server, mongo, proxy
        )
        started.append(running)
        return running

    yield make
    await proxy.close()
    await asyncio.to_thread(nats_server.kill)
    await asyncio.to_thread(mongo.kill)


async def busy(running: Running) -> None:
    """Start it with a handler stuck in flight, a request being answered and an event in the outbox."""
    rt = running.runtime
    in_flight = asyncio.Event()

    async def stuck(env: Envelope[MailboxApproved]) -> None:
        in_flight.set()
        await rt.db.things.find_one({"_id": "x"})
        await asyncio.Event().wait()  # outlives the grace: cancelled and given back

    async def ping(req: Ping) -> dict[str, bool]:
        return {"pong": True}

    rt.consume(MailboxApproved, "stop-stuck", stuck, ConsumerOptions(ack_wait_s=30))
    rt.rpc("ping", Ping, ping)
    await rt.start()
    event = MailboxApproved(mailbox_id="m1", email="a@example.org", approved_at=datetime.now(UTC))
    await rt.publish(rt.envelope(event))
    await asyncio.wait_for(in_flight.wait(), 10)
    reply = await rt.bus.connection.request("mailwarden.rpc.stop-svc.ping", b"{}", timeout=5)
    assert b'"pong": true' in reply.data
    # An event waiting in the outbox: the relay's last pass has work to do.
    await rt.db.things.insert_one({"_id": "y", **new_document_outbox([outbox_entry(rt.envelope(event))])})


async def timed_stop(rt: ServiceRuntime, case: str) -> float:
    t0 = time.monotonic()
    await rt.stop()
    took = time.monotonic() - t0
    print(f"stop {case}: {took:.1f} s (budget {BUDGET_S:.0f} s)")
    return took


async def test_a_normal_stop_ends_within_the_budget(service: Callable[[], Running]) -> None:
    running = service()
    await busy(running)
    took = await timed_stop(running.runtime, "normal")
    assert took <= BUDGET_S + SLACK_S
    # The relay's last pass ran: every event published and, on the change stream, its position stored.
    assert await _events_left(running) == 0


async def _events_left(running: Running) -> int:
    from pymongo import AsyncMongoClient

    from mailwarden_runtime.changes import unpublished

    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(running.mongo.uri)
    try:
        name = f"{running.runtime.name}-outbox"
        return await unpublished(client[running.runtime.db.name], ["things"], name)
    finally:
        await client.close()


async def test_stop_ends_within_the_budget_with_nats_killed(service: Callable[[], Running]) -> None:
    running = service()
    await busy(running)
    await asyncio.to_thread(running.nats.kill)
    await asyncio.sleep(0.5)  # the client notices and starts reconnecting; stop must not wait for it
    assert await timed_stop(running.runtime, "nats killed") <= BUDGET_S + SLACK_S


async def test_stop_ends_within_the_budget_with_the_database_killed(service: Callable[[], Running]) -> None:
    running = service()
    await busy(running)
    await asyncio.to_thread(running.mongo.kill)
    assert await timed_stop(running.runtime, "database killed") <= BUDGET_S + SLACK_S


async def test_stop_ends_within_the_budget_with_a_silent_nats(service: Callable[[], Running]) -> None:
    running = service()
    await busy(running)
    running.proxy.go_silent()
    assert running.runtime.bus.is_connected, "the client has not noticed: the hard case"
    assert await timed_stop(running.runtime, "silent nats") <= BUDGET_S + SLACK_S
