"""Acks of JetStream publishes collected on one inbox (publish_nowait): stored, refused, unheard of."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig
from nats.js.errors import APIError, NoStreamResponseError

from mailwarden_runtime.jsacks import AckInbox
from mailwarden_servers import NatsServer

pytestmark = pytest.mark.integration


async def test_acks_resolve_per_message_and_errors_come_out(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "nats") as server:
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            await js.add_stream(StreamConfig(name="ACKS", subjects=["acks.>"]))
            inbox = AckInbox(nc)
            stored = [await inbox.publish(f"acks.{i}", b"x", {"Nats-Msg-Id": f"m{i}"}) for i in range(50)]
            await asyncio.wait_for(asyncio.gather(*stored), 5)
            assert (await js.stream_info("ACKS")).state.messages == 50
            assert inbox.pending == 0  # every entry freed once its ack came

            nowhere = await inbox.publish("nostream.x", b"x")
            with pytest.raises(NoStreamResponseError):
                await asyncio.wait_for(nowhere, 5)
            wrong = await inbox.publish("acks.1", b"x", {"Nats-Expected-Stream": "OTHER"})
            with pytest.raises(APIError):
                await asyncio.wait_for(wrong, 5)
            assert (await js.stream_info("ACKS")).state.messages == 50
        finally:
            await nc.close()
