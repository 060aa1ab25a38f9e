"""Two sender replicas on one NATS and one database: the host's connection limit and a mailbox's
rate hold across both (JetStream KV), not once per process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sender_helpers import NAMES, Recorder, eventually, mail

from mailwarden_mailnet.resolve import StaticResolver
from mailwarden_runtime.auth import bearer_header
from mailwarden_runtime.auth.bootstrap import issue_token
from mailwarden_servers import SmtpServer
from sender_svc.app import create_app
from sender_svc.config import Settings

pytestmark = pytest.mark.integration


def sent_keys(events: Recorder, mailbox_id: str) -> dict[str, dict[str, Any]]:
    """EmailSent by idempotency key (both replicas' relays may publish an event: JetStream keeps
    one, a core subscription sees both)."""
    return {e["data"]["idempotency_key"]: e["data"] for e in events.of("EmailSent", mailbox_id)}


@pytest.fixture
async def second(app: FastAPI, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Another replica of the sender (same settings, database and NATS) and its HTTP client."""
    replica = create_app(settings, resolver=StaticResolver(NAMES))
    async with replica.router.lifespan_context(replica):
        headers = bearer_header(await issue_token(settings.nats_url))
        transport = httpx.ASGITransport(app=replica)
        async with httpx.AsyncClient(transport=transport, base_url="http://svc", headers=headers) as c:
            yield c


@pytest.mark.sender_settings(sender_idle_keep_s=0.2, sender_concurrency=4)
async def test_a_host_limit_of_one_holds_across_two_replicas(
    client: httpx.AsyncClient,
    second: httpx.AsyncClient,
    seed: Any,
    smtp_clean: SmtpServer,
    events: Recorder,
) -> None:
    await seed("a1", max_connections=1)  # two logins (mailboxes) of one profile: one host
    await seed("a2", max_connections=1, user="bob", password="bob-pw")
    for i in range(4):
        assert (await client.post("/sends", json=mail("a1", f"k{i}"))).status_code == 202
        assert (await second.post("/sends", json=mail("a2", f"k{i}"))).status_code == 202
    await eventually(lambda: len(sent_keys(events, "a1")) == len(sent_keys(events, "a2")) == 4, 30)
    assert smtp_clean.message_count == 8
    # Per process it would be one each, two at once for seconds. Across both: one at a time (the
    # server may see a closed session's end a moment after the next one's start).
    await eventually(lambda: smtp_clean.open_now == 0)
    assert smtp_clean.overlap(1) < 0.2, smtp_clean.spans


@pytest.mark.sender_settings(sender_rate_per_minute=60.0, sender_rate_burst=2.0)
async def test_a_mailbox_rate_holds_across_two_replicas(
    client: httpx.AsyncClient,
    second: httpx.AsyncClient,
    seed: Any,
    smtp_clean: SmtpServer,
    events: Recorder,
) -> None:
    await seed("r1")
    for i in range(3):
        await client.post("/sends", json=mail("r1", f"a{i}"))
        await second.post("/sends", json=mail("r1", f"b{i}"))
    await eventually(lambda: len(sent_keys(events, "r1")) == 6, 30)
    times = sorted(datetime.fromisoformat(e["sent_at"]) for e in sent_keys(events, "r1").values())
    # A burst of 2, then one a second, shared: the 6th ~4 s after the 1st (per process: ~1 s, each
    # replica spending its own burst of 2). The 1st also paid for connecting (0.1-1.5 s loaded).
    assert (times[5] - times[0]).total_seconds() >= 2.5
