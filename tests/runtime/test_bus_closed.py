"""A NATS connection the server closes for good (a protocol "-ERR") fails liveness instead of lingering.

nats-py reconnects after a network failure, but after most server errors it closes the client and
never reconnects. A service in that state answers nothing on NATS yet looked alive before.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import httpx
import pytest

from mailwarden_runtime.service import ServiceRuntime
from mailwarden_runtime.settings import ServiceSettings
from mailwarden_servers.nats import NatsServer


async def until(condition: object, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_server_error_fails_liveness_and_says_why(
    private_nats: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    rt = ServiceRuntime(
        f"lost-{uuid.uuid4().hex[:8]}",
        ServiceSettings(nats_url=private_nats.url, log_setup=False),
        uses_database=False,
    )
    app = rt.http_app("lost")
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
            assert (await client.get("/healthz")).status_code == 200
            # A line the server cannot parse: it answers "-ERR 'Unknown Protocol Operation'" and
            # closes the connection, which nats-py treats as final.
            with caplog.at_level(logging.ERROR, logger="mailwarden_runtime.bus"):
                rt.bus.connection._transport.write(b"NOT-A-NATS-OP\r\n")  # type: ignore[union-attr]
                await until(lambda: rt.bus.lost is not None)
            answer = await client.get("/healthz")
            assert answer.status_code == 503
            assert answer.json()["status"] == "dead"
            assert "unknown protocol operation" in answer.json()["reason"].lower()
            assert any("closed for good" in r.getMessage() for r in caplog.records)


async def test_a_deliberate_close_is_not_a_loss(private_nats: NatsServer) -> None:
    rt = ServiceRuntime(
        f"closing-{uuid.uuid4().hex[:8]}",
        ServiceSettings(nats_url=private_nats.url, log_setup=False),
        uses_database=False,
    )
    await rt.start()
    bus = rt.bus
    await rt.stop()
    assert bus.lost is None
