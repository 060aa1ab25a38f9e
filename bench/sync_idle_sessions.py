"""sync-svc's memory per idling mailbox: RSS with N IMAP sessions in IDLE, and new-mail latency.

    .venv/bin/python -m bench.sync_idle_sessions --mailboxes 100

Starts a private Dovecot with N users, nats-server and the Mongo-wire server, runs sync-svc in this
process, enables a first small set of mailboxes and then all N (each with its own profile allowing
300 connections per host), waits until every one is idling, and reports the RSS growth per extra
idling session (so the code and caches loaded once are not counted), then the time from an
IMAP APPEND to its EmailReceived for a few mailboxes while all N idle.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import imaplib
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats
import psutil

from bench.seed import publish
from bench.stack import dovecot_tuning
from bench.sync_one_mailbox import enable_events, serve_logins, sync_app, workdir
from mailwarden_runtime.crypto import KeyRing
from mailwarden_servers import DovecotServer, MongoWireServer, NatsServer, TestCertificates
from sync_svc import metrics

FIRST = 10


def append_one(dovecot: DovecotServer, user: str, password: str, subject: str) -> None:
    imap = imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
    try:
        imap.login(user, password)
        raw = f"From: a@example.org\r\nSubject: {subject}\r\nMessage-ID: <{uuid.uuid4()}@x>\r\n\r\nhi\r\n"
        imap.append("INBOX", None, None, raw.encode())
    finally:
        imap.logout()


async def idling(count: int, timeout_s: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while metrics.IDLE_SESSIONS._value.get() < count:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.2)
    return True


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    work = workdir()
    certs = TestCertificates.create(work / "certs")
    users = {f"u{i:04d}": f"pw{i:04d}" for i in range(args.mailboxes)}
    tuning = dovecot_tuning(os.cpu_count() or 1)
    tuning["process_limit"] = max(int(tuning["process_limit"]), args.mailboxes * 2 + 50)
    key_text = KeyRing.generate_key_text("transit-bench")
    result: dict[str, Any] = {"mailboxes": args.mailboxes, "tls_read_kb": args.tls_read_kb}
    try:
        await measure(args, work, certs, users, tuning, key_text, result)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


async def measure(
    args: argparse.Namespace,
    work: Path,
    certs: TestCertificates,
    users: dict[str, str],
    tuning: dict[str, Any],
    key_text: str,
    result: dict[str, Any],
) -> None:
    with (
        DovecotServer(work / "dovecot", certs, users, max_userip_connections=1000, **tuning) as dovecot,
        NatsServer(work / "nats") as nats_server,
        MongoWireServer(work / "mongo") as mongo,
    ):
        app = sync_app(
            nats_server, mongo, certs, key_text, sync_reconcile_s=0.5, sync_tls_read_kb=args.tls_read_kb
        )
        transit = KeyRing.parse(key_text)
        nc = await nats.connect(nats_server.url)
        await serve_logins(nc, transit, dovecot, {f"mbx-{u}": (u, p) for u, p in users.items()})
        js = nc.jetstream()

        async def enable(names: list[str]) -> None:
            for user in names:
                events = enable_events(
                    dovecot, transit, f"mbx-{user}", user, users[user], max_concurrent_connections=300
                )
                await publish(js, events)

        names = sorted(users)
        async with app.router.lifespan_context(app):
            await enable(names[:FIRST])
            result["first_idle"] = await idling(FIRST)
            await asyncio.sleep(2)
            before = rss()
            await enable(names[FIRST:])
            result["all_idle"] = await idling(args.mailboxes)
            await asyncio.sleep(2)
            after = rss()
            result["rss_mb_with_first"] = round(before / 2**20, 1)
            result["rss_mb_with_all"] = round(after / 2**20, 1)
            result["rss_kb_per_idle_session"] = round((after - before) / 1024 / (args.mailboxes - FIRST), 1)
            latencies = []
            for user in names[: args.probes]:
                subject = f"mailwarden.email.received.mbx-{user}"
                sub = await nc.subscribe(subject)
                sent = time.perf_counter()
                await asyncio.to_thread(append_one, dovecot, user, users[user], "probe")
                await sub.next_msg(timeout=10)
                latencies.append(time.perf_counter() - sent)
                await sub.unsubscribe()
            result["append_to_event_s"] = [round(x, 3) for x in latencies]
        await nc.drain()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=100)
    parser.add_argument("--probes", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--tls-read-kb", type=int, default=32, help="MW_SYNC_TLS_READ_KB (asyncio's own default: 256)."
    )
    parsed = parser.parse_args()
    out = asyncio.run(main(parsed))
    print(json.dumps(out, indent=2))
    if parsed.json:
        parsed.json.write_text(json.dumps(out, indent=2) + "\n")
