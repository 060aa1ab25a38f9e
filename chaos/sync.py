"""Sync under faults (reliability.md Y1-Y3): a first sync of a big INBOX, cut by a fault.

The real services (profile-svc, mailbox-svc, tester-svc, alert-svc in-process) enable one mailbox
through their APIs (Test & Enable); sync-svc runs as its own process, asks mailbox-svc for the
login, and publishes the INBOX. A fault comes once a third is published:

- Y1: kill -9 of the sync worker; a second worker takes the mailbox over once the lease expires.
- Y2: NATS restarted (file storage, fsync before ack).
- Y3: the database restarted.

What JetStream keeps is then audited: as many distinct EmailReceived ids as messages, no id stored
twice, the UIDs contiguous. The fast versions are tests/sync_svc/test_kill.py and test_restart.py
(600 messages, sync-svc in-process for the restarts, a login desk in place of mailbox-svc).
"""

from __future__ import annotations

import asyncio
import imaplib
import json
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from chaos.harness import Figure, MailTarget, System, owner, private_nats
from chaos.infra import Infra
from mailwarden_servers import DovecotServer, eventually
from mailwarden_servers.devstack import ServiceProcess

Fault = Literal["kill", "nats", "database"]
SYNC_ENV = {
    "MW_SYNC_ALLOW_NETWORKS": "127.0.0.0/8",
    "MW_SYNC_LEASE_TTL_S": "3",
    "MW_SYNC_RECONCILE_S": "0.2",
    "MW_SYNC_FETCH_BATCH": "50",
    "MW_SYNC_POLL_FLOOR_S": "0.5",
    "MW_SYNC_IDLE": "false",
}
TITLES = {
    "kill": "Y1 kill -9 of a sync worker mid-sync",
    "nats": "Y2 NATS restart mid-sync",
    "database": "Y3 database restart mid-sync",
}


def fill_inbox(dovecot: DovecotServer, user: str, password: str, n: int) -> None:
    """``n`` messages by IMAP APPEND over one login."""
    imap = imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
    try:
        imap.login(user, password)
        for i in range(n):
            raw = (
                f"From: s@example.org\r\nTo: {user}@mail.test\r\nSubject: chaos {i}\r\n"
                f"Message-ID: <c{i}-{uuid.uuid4().hex[:8]}@example.org>\r\n\r\nbody {i}\r\n"
            )
            imap.append("INBOX", None, None, raw.encode())
    finally:
        imap.logout()


async def _enable(system: System, infra: Infra, user: str, password: str, tag: str) -> str:
    """One IMAP mailbox, incoming only, Test & Enable through the APIs; its id once enabled."""
    target = MailTarget("127.0.0.1", infra.dovecot.imaps_port, infra.smtp_starttls_port, user, password)
    await system.allow_ports(infra.mail_ports)
    profile_id = await system.create_profile(target, tag, {"process_email_from": "2020-01-01"})
    mailboxes = system.http("mailbox-svc")
    body = {
        "mailbox_id": f"y{tag}",
        "email": f"{user}@mail.test",
        "owner": owner("user", f"o{tag}"),
        "profile_id": profile_id,
        "outgoing_delivery": "none",
        "credentials": {"username": user, "password": password},
    }
    resp = await mailboxes.post("/mailboxes", json=body)
    assert resp.status_code == 201, resp.text
    mailbox_id = f"y{tag}"
    assert (await mailboxes.post("/mailboxes/approve", json={"mailbox_ids": [mailbox_id]})).status_code == 200
    assert (await mailboxes.post(f"/mailboxes/{mailbox_id}/test")).status_code == 202

    async def enabled() -> bool:
        return bool((await mailboxes.get(f"/mailboxes/{mailbox_id}")).json().get("enabled_incoming"))

    await eventually(enabled, "the mailbox enabled for incoming email", 60)
    return mailbox_id


async def _stored(system: System, mailbox_id: str) -> int:
    subject = f"mailwarden.email.received.{mailbox_id}"
    try:
        info = await system.nc.jetstream().stream_info("MW_EMAIL", subjects_filter=subject)
    except Exception:  # NATS restarting
        return -1
    return sum((info.state.subjects or {}).values())


async def _wait_stored(system: System, mailbox_id: str, n: int, within: float) -> int:
    deadline = time.monotonic() + within
    count = await _stored(system, mailbox_id)
    while count < n and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        count = await _stored(system, mailbox_id)
    return count


def _worker(system: System, name: str) -> ServiceProcess:
    return system._process("sync-svc", name)


async def sync_fault(infra: Infra, workdir: Path, *, messages: int, fault: Fault) -> Figure:
    """Y1-Y3: ``messages`` in a fresh INBOX; ``fault`` once a third is published; the audit."""
    fig = Figure(TITLES[fault])
    tag = uuid.uuid4().hex[:6]
    user, password = f"chaos-{tag}", f"chaos-{tag}-pw"
    infra.dovecot.add_user(user, password)
    t0 = time.monotonic()
    await asyncio.to_thread(fill_inbox, infra.dovecot, user, password, messages)
    fig.figures["fill_s"] = round(time.monotonic() - t0, 1)
    env = {"sync-svc": {**SYNC_ENV, "MW_SYNC_CA_FILE": str(infra.certs.ca)}}
    async with (
        private_nats(workdir / "nats") as nats_server,
        System(workdir, nats_server.url, infra.mongo_uri, infra.certs, service_env=env) as system,
    ):
        mailbox_id = await _enable(system, infra, user, password, tag)
        first = _worker(system, "sync-a")
        second = _worker(system, "sync-b")
        try:
            await asyncio.to_thread(first.start)
            started = time.monotonic()
            at_fault = await _wait_stored(system, mailbox_id, messages // 3, 300)
            fig.figures["stored_at_fault"] = at_fault
            if fault == "kill":
                await asyncio.to_thread(first.kill)
                await asyncio.to_thread(second.start)
            elif fault == "nats":
                await asyncio.to_thread(nats_server.restart)
            else:
                assert infra.mongo is not None, "the database must be ours to restart"
                await asyncio.to_thread(infra.mongo.restart)
            done = await _wait_stored(system, mailbox_id, messages, 600)
            fig.figures["sync_s"] = round(time.monotonic() - started, 1)
            await asyncio.sleep(2.0)  # more passes: still nothing published twice
            bodies = await system.stream_messages("MW_EMAIL", f"mailwarden.email.received.{mailbox_id}")
        finally:
            await asyncio.to_thread(first.kill)
            await asyncio.to_thread(second.stop)
    envelopes = [json.loads(body) for _, body in bodies]
    ids = Counter(e["id"] for e in envelopes)
    uids = sorted(int(e["data"]["uid"]) for e in envelopes)
    fig.figures |= {
        "messages": messages,
        "stored": len(envelopes),
        "distinct_ids": len(ids),
        "duplicates": sum(c - 1 for c in ids.values()),
        "at": datetime.now(UTC).strftime("%H:%M"),
    }
    fig.check(0 < at_fault < messages, f"{at_fault} stored at the fault: not mid-sync")
    fig.check(done >= messages, f"only {done} of {messages} stored within the deadline")
    fig.check(len(ids) == messages, f"{len(ids)} distinct ids for {messages} messages")
    fig.check(len(envelopes) == len(ids), f"{len(envelopes) - len(ids)} ids stored twice")
    fig.check(
        bool(uids) and uids == list(range(uids[0], uids[0] + messages)),
        "the UIDs published are not contiguous",
    )
    return fig
