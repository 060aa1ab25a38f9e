"""The console's NATS user in the production permissions (deploy/helm/nats-values.yaml, rendered by
deploy/nats/render.py) lets it do what it does, on a real nats-server: replay and follow job events
through an ordered consumer on MW_TESTS, follow alerts and status changes; and nothing more."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import secrets
from pathlib import Path
from types import ModuleType

import nats
import pytest
from nats.errors import Error as NatsError

from contracts import subjects
from mailwarden_console.live import Inbox, LiveFeed, Notice
from mailwarden_runtime.bus import ensure_streams
from mailwarden_runtime.settings import ServiceSettings
from mailwarden_servers import NatsServer

pytestmark = pytest.mark.integration

RENDER = Path(__file__).resolve().parents[2] / "deploy" / "nats" / "render.py"


def _render() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mailwarden_nats_render", RENDER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _next(queue: Inbox) -> Notice | None:
    return await asyncio.wait_for(queue.get(), 10)


async def test_console_user_reads_jobs_alerts_and_statuses_only(tmp_path: Path) -> None:
    render = _render()
    passwords = {var: secrets.token_hex(8) for var in render.variables()}
    server = NatsServer(tmp_path / "nats", config_text=render.render(passwords=passwords))
    await asyncio.to_thread(server.start)
    try:

        def url(user: str, var: str) -> str:
            return f"nats://{user}:{passwords[var]}@127.0.0.1:{server.port}"

        mailbox = await nats.connect(url("mailbox-svc", "MAILBOX_SVC_PASSWORD"))
        alert = await nats.connect(url("alert-svc", "ALERT_SVC_PASSWORD"))
        await ensure_streams(mailbox, ServiceSettings(nats_url=url("mailbox-svc", "MAILBOX_SVC_PASSWORD")))
        js = mailbox.jetstream()
        started = {
            "data": {"job_id": "job1", "profile_id": "p1", "total": 3, "started_at": "2026-12-03T08:00:00Z"}
        }
        await js.publish(f"{subjects.JOBS}.started", json.dumps(started).encode())

        feed = LiveFeed(url("console", "CONSOLE_PASSWORD"), job_history_h=1)
        async with feed.hub.listen() as queue:
            await feed.start()
            try:
                assert await _next(queue) == Notice("job", {"job_id": "job1"})  # replayed from the stream
                done = {"data": {"job_id": "job1", "state": "completed", "progress": {"total": 3, "done": 3}}}
                await js.publish(f"{subjects.JOBS}.completed", json.dumps(done).encode())
                assert await _next(queue) == Notice("job", {"job_id": "job1"})
                assert (feed.jobs["job1"].state, feed.jobs["job1"].done) == ("completed", 3)

                raised = {
                    "data": {"alert_id": "a1", "recipient": {"kind": "user", "id": "u1"}, "mailbox_id": "m1"}
                }
                await alert.publish(
                    subjects.alert_subject("user", "u1", "error"), json.dumps(raised).encode()
                )
                assert await _next(queue) == Notice(
                    "alert", {"alert_id": "a1", "recipient": "user:u1", "mailbox_id": "m1"}
                )
                status = {"data": {"mailbox": {"mailbox_id": "m1"}}}
                await mailbox.publish(subjects.MAILBOX_STATUS_CHANGED, json.dumps(status).encode())
                assert await _next(queue) == Notice("mailbox", {"mailbox_id": "m1"})
            finally:
                await feed.stop()

        errors: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            errors.append(exc)

        console = await nats.connect(url("console", "CONSOLE_PASSWORD"), error_cb=on_error)
        await console.publish(subjects.TEST_REQUESTED, b"{}")
        await console.flush()
        for _ in range(50):
            if errors:
                break
            await asyncio.sleep(0.05)
        assert any("permissions violation" in str(e).lower() for e in errors), errors
        with pytest.raises((NatsError, TimeoutError)):
            await console.request(f"{subjects.PREFIX}.rpc.mailbox-svc.list", b"{}", timeout=1)
        for client in (console, mailbox, alert):
            await client.close()
    finally:
        await asyncio.to_thread(server.stop)
