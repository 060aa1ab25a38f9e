"""The tester's question to mailbox-svc before a job's test, against the real service (issue #18)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx
import nats
import pytest
from fastapi import FastAPI

from mailwarden_runtime.auth import bearer_header
from tester_svc.jobgate import JobGate

pytestmark = pytest.mark.integration

SETTINGS = ("default_profile_id", "incoming_delivery", "outgoing_delivery", "act_delivery", "approved_users_only",
            "approved_queues_only", "alert_levels", "notify_mailbox_owner")  # fmt: skip


async def test_the_gate_sees_a_cancelled_job_through_mailbox_svc(
    mailwarden_services: Callable[[], AbstractAsyncContextManager[dict[str, FastAPI]]], nats_url: str
) -> None:
    # A server that accepts and never answers: each job's one test stays in flight, the jobs running.
    silent = await asyncio.start_server(lambda _r, _w: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    async with mailwarden_services() as apps, silent:
        auth = bearer_header(apps["profile"].state.token)
        profiles = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=apps["profile"]), base_url="http://p", headers=auth
        )
        mailboxes = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=apps["mailbox"]), base_url="http://m", headers=auth
        )
        async with profiles, mailboxes:
            current = (await profiles.get("/settings")).json()
            body = {k: v for k, v in current.items() if k in SETTINGS}
            body.update(port_preset="custom", allowed_ports=[port])
            assert (await profiles.put("/settings", json=body)).status_code == 200
            jobs = []
            for name in ("running", "cancelled"):
                r = await profiles.post(
                    "/profiles",
                    json={
                        "name": f"gate {name}",
                        "owner": {"kind": "user", "id": "a", "name": "A"},
                        "incoming_protocol": "imap",
                        "incoming": {"host": "127.0.0.1", "port": port, "tls": "implicit"},
                        "outgoing": {"port": port},
                    },
                )
                assert r.status_code == 201, r.text
                profile_id = r.json()["profile_id"]
                mailbox = {
                    "email": f"{name}@example.org",
                    "owner": {"kind": "user", "id": "o", "name": "O"},
                    "profile_id": profile_id,
                    "credentials": {"username": "u", "password": "p"},
                }
                assert (await mailboxes.post("/mailboxes", json=mailbox)).status_code == 201
                jobs.append((await mailboxes.post("/jobs", json={"profile_id": profile_id})).json()["job_id"])
            running, cancelled = jobs
            r = await mailboxes.post(f"/jobs/{cancelled}/cancel")
            assert r.status_code == 200, r.text
            assert (await mailboxes.get(f"/jobs/{running}")).json()["state"] == "running"
        nc = await nats.connect(nats_url)

        async def ask(subject: str, body: bytes, timeout_s: float) -> bytes:
            return bytes((await nc.request(subject, body, timeout=timeout_s, headers=auth)).data)

        try:
            gate = JobGate(ask)
            assert await gate.cancelled(cancelled) is True
            assert await gate.cancelled(running) is False
            assert await gate.cancelled("job_nosuch") is False  # unknown: the test runs
        finally:
            await nc.close()
