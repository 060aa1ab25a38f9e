"""The in-document outbox against real servers: committed writes publish, in order, once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from contracts import Envelope, MailboxApproved
from mailwarden_runtime.outbox import new_document_outbox, outbox_entry, with_outbox
from mailwarden_runtime.service import ServiceRuntime
from mailwarden_runtime.settings import ServiceSettings


async def test_relay_publishes_in_order_and_clears_the_outbox(nats_url: str, mongo_uri: str) -> None:
    settings = ServiceSettings(
        nats_url=nats_url, mongodb_uri=mongo_uri, mongodb_db=f"t_{uuid.uuid4().hex[:12]}", log_setup=False
    )
    rt = ServiceRuntime("outbox-test", settings, outbox_collections=["things"])
    seen: list[str] = []
    tag = uuid.uuid4().hex[:8]

    async def handle(env: Envelope[MailboxApproved]) -> None:
        if env.data.email.startswith(tag):
            seen.append(env.data.mailbox_id)

    rt.consume(MailboxApproved, f"outbox-{tag}", handle)
    await rt.start()
    try:

        def event(n: int) -> Envelope[MailboxApproved]:
            return rt.envelope(
                MailboxApproved(mailbox_id=f"m{n}", email=f"{tag}@example.org", approved_at=datetime.now(UTC))
            )

        await rt.db.things.insert_one({"_id": "a", **new_document_outbox([outbox_entry(event(0))])})
        for n in range(1, 4):
            await rt.db.things.update_one(
                {"_id": "a"}, with_outbox({"$set": {"n": n}}, [outbox_entry(event(n))])
            )
        rt.wake_relay()
        for _ in range(200):
            if len(seen) >= 4:
                break
            await asyncio.sleep(0.05)
        doc = await rt.db.things.find_one({"_id": "a"})
        assert seen == ["m0", "m1", "m2", "m3"]
        assert doc is not None and doc["outbox"] == [] and "outbox_pending" not in doc and doc["n"] == 3
        assert await rt.relay.drain() == 0 if rt.relay else False
    finally:
        await rt.stop()
