"""Bursts reuse one logged-in connection within the host's connection limit; a mailbox's rate holds."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest
from sender_helpers import Recorder, mail

from mailwarden_servers import SmtpServer

pytestmark = pytest.mark.integration


@pytest.mark.sender_settings(
    sender_concurrency=4, sender_idle_keep_s=120.0
)  # reuse, not the idle timeout, is under test
async def test_a_burst_goes_over_one_connection_when_the_host_allows_one(
    client: httpx.AsyncClient, seed: Any, smtp_clean: SmtpServer, events: Recorder
) -> None:
    await seed("mbx1", max_connections=1)
    for i in range(6):
        assert (await client.post("/sends", json=mail("mbx1", f"burst-{i}"))).status_code == 202
    await events.wait_for("EmailSent", 6, mailbox_id="mbx1")
    assert smtp_clean.message_count == 6
    assert smtp_clean.sessions == 1 and smtp_clean.auth_attempts == 1  # one login, reused


@pytest.mark.sender_settings(sender_rate_per_minute=60.0, sender_rate_burst=2.0)
async def test_a_mailbox_sends_no_faster_than_its_rate(
    client: httpx.AsyncClient, seed: Any, smtp_clean: SmtpServer, events: Recorder
) -> None:
    await seed("mbx1")
    await seed("other", profile_id="prof2")
    for i in range(6):
        await client.post("/sends", json=mail("mbx1", f"r-{i}"))
    await client.post("/sends", json=mail("other", "o"))
    sent = [e["data"] for e in await events.wait_for("EmailSent", 6, mailbox_id="mbx1", timeout=30)]
    times = sorted(datetime.fromisoformat(e["sent_at"]) for e in sent)
    # 2 at once (the burst), then one a second: the 6th taken ~4 s after the 1st. ``sent_at`` is
    # after DATA: the 1st also paid for connecting and asking mailbox-svc for the login (0.1-1.5 s
    # on a loaded machine), the 6th went over the warm connection. Without the rate: < 0.5 s.
    assert (times[5] - times[0]).total_seconds() >= 2.5
    other = (await events.wait_for("EmailSent", mailbox_id="other"))[0]["data"]
    assert datetime.fromisoformat(other["sent_at"]) < times[5]  # another mailbox is not held back
