"""After the database comes back, the client answers again: no lock left held by an outage.

Many operations waiting for a server while the MongoDB-wire server is down (as a service's handlers,
loops and relays do) time out their condition waits again and again; on Python 3.11 PyMongo's
``wait_for`` could leave the topology lock held for ever (chaos A4 at full size: alert-svc's client
never answered again). See ``mailwarden_runtime.mongo._condition_waits_in_the_waiting_task``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from mailwarden_runtime.mongo import create_client
from mailwarden_runtime.settings import ServiceSettings
from mailwarden_servers import MongoWireServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

WAITERS = 40
OUTAGE_S = 15.0


async def test_the_client_answers_after_an_outage_with_many_waiters(tmp_path: Path) -> None:
    with MongoWireServer(tmp_path / "mongo") as server:
        settings = ServiceSettings(mongodb_uri=server.uri, mongodb_db="outage", log_setup=False)
        client = create_client(settings, "outage-test")
        coll = client["outage"]["c"]
        await coll.insert_one({"_id": 1})
        errors: Counter[str] = Counter()
        stop = asyncio.Event()

        async def reader(n: int) -> None:
            # Some give up early, as a relay stopping its reader or a bounded step does: the
            # operation is cancelled while it waits for a server.
            limit = 0.3 + (n % 8) / 10
            while not stop.is_set():
                try:
                    await asyncio.wait_for(coll.find_one({"_id": 1}), limit)
                except Exception as exc:  # the outage: each waits for a server, then gives up
                    errors[type(exc).__name__] += 1
                await asyncio.sleep(0.01)

        readers = [asyncio.create_task(reader(n)) for n in range(WAITERS)]
        try:
            await asyncio.sleep(0.5)
            server.kill()
            await asyncio.sleep(OUTAGE_S)
            server.start()
            await asyncio.sleep(2.0)
            stop.set()
            _, stuck = await asyncio.wait(readers, timeout=30)
            probe = asyncio.create_task(coll.find_one({"_id": 1}))
            answered, _ = await asyncio.wait({probe}, timeout=20)
        finally:
            stop.set()
            for task in readers:
                task.cancel()
        assert "RuntimeError" not in errors, f"a condition waited without its lock: {dict(errors)}"
        assert not stuck, f"{len(stuck)} of {WAITERS} readers never returned after the outage"
        assert answered and probe.result() == {"_id": 1}
        await asyncio.wait_for(client.close(), 10)
