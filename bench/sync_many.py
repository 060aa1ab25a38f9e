"""sync-svc on many small mailboxes: messages/s from the IMAP server to EmailReceived, beside two clients.

    .venv/bin/python -m bench.sync_many --mailboxes 1000 --messages 10 --rtt 0,50 [--json out.json]

A tuned private Dovecot with N users of M messages each (written into their maildirs, the same
messages as bench/sync_one_mailbox.py), reached directly (RTT 0) or behind a latency proxy
(``--rtt`` is the round trip: RTT / 2 each way, bench/latency_proxy.py), and on each:

1. ``imaplib``: what an admin would write: one mailbox after the other, log in, SELECT, SEARCH,
   one ``FETCH RFC822`` per message, ``email.message_from_bytes`` with the default policy; run on
   ``--script-sample`` mailboxes (its rate does not depend on how many follow);
2. the bare ``aioimaplib`` loop: at most ``--concurrency`` mailboxes at once, log in, SELECT,
   ``FETCH 1:* BODY.PEEK[]``, nothing parsed or stored (the Python client limit);
3. sync-svc in this process: from the events that enable the N mailboxes to the (N x M)-th
   EmailReceived stored in JetStream (the raw bytes stored, the ledger written).
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import imaplib
import json
import os
import shutil
import ssl
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aioimaplib
import nats

from bench.latency_proxy import LatencyProxyProcess
from bench.stack import dovecot_tuning
from bench.sync_one_mailbox import enable_events, message, serve_logins, sync_app, workdir
from contracts.envelope import make_envelope
from mailwarden_runtime.crypto import KeyRing
from mailwarden_servers import DovecotServer, MongoWireServer, NatsServer, TestCertificates
from mailwarden_servers.dovecot import MAIL_GID, MAIL_UID


def users_of(n: int) -> dict[str, str]:
    return {f"u{i:05d}": f"pw-{i:05d}" for i in range(n)}


def fill(dovecot: DovecotServer, users: dict[str, str], per_mailbox: int) -> None:
    """Every user's maildir gets ``per_mailbox`` messages (one login each creates it)."""
    for user, password in users.items():
        imap = imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
        imap.login(user, password)
        imap.select("INBOX")
        imap.logout()
        new = dovecot.mail_dir / user / "Maildir" / "new"
        for n in range(per_mailbox):
            path = new / f"{1_700_000_000 + n}.M{n}P1.bench"
            path.write_bytes(message(n))
            if os.geteuid() == 0:
                os.chown(path, MAIL_UID, MAIL_GID)


def tls(ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False  # the proxy's address, not the certificate's name
    return ctx


def imaplib_script(port: int, ca: Path, users: dict[str, str]) -> tuple[int, float]:
    """One mailbox after the other, one FETCH per message, full parse: messages and seconds."""
    ctx = tls(ca)
    count = 0
    started = time.perf_counter()
    for user, password in users.items():
        imap = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx)
        imap.login(user, password)
        imap.select("INBOX", readonly=True)
        _, data = imap.search(None, "ALL")
        for num in data[0].split():
            _, parts = imap.fetch(num, "(RFC822)")
            raw = parts[0][1] if parts and isinstance(parts[0], tuple) else b""
            email.message_from_bytes(raw, policy=email.policy.default)
            count += 1
        imap.logout()
    return count, time.perf_counter() - started


async def aioimaplib_loop(port: int, ca: Path, users: dict[str, str], concurrency: int) -> tuple[int, float]:
    """Every mailbox, ``concurrency`` at once, one FETCH of the whole INBOX each: messages and seconds."""
    ctx = tls(ca)
    gate = asyncio.Semaphore(concurrency)
    counts: list[int] = []

    async def one(user: str, password: str) -> None:
        async with gate:
            imap = aioimaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx, timeout=60)
            await imap.wait_hello_from_server()
            await imap.login(user, password)
            await imap.select("INBOX")
            fetched = await imap.fetch("1:*", "(BODY.PEEK[])")
            counts.append(sum(1 for line in fetched.lines if b" FETCH " in bytes(line)))
            await imap.logout()

    started = time.perf_counter()
    await asyncio.gather(*(one(u, p) for u, p in users.items()))
    return sum(counts), time.perf_counter() - started


async def sync_svc(
    work: Path, dovecot: DovecotServer, port: int, certs: TestCertificates, users: dict[str, str], total: int
) -> tuple[int, float]:
    """sync-svc in this process: events that enable every mailbox → the last EmailReceived stored."""
    key_text = KeyRing.generate_key_text("transit-bench")
    transit = KeyRing.parse(key_text)
    with NatsServer(work / "nats") as nats_server, MongoWireServer(work / "mongo") as mongo:
        app = sync_app(nats_server, mongo, certs, key_text, sync_max_sessions=10_000)
        nc = await nats.connect(nats_server.url)
        await serve_logins(nc, transit, dovecot, {f"m{u}": (u, p) for u, p in users.items()}, port)
        js = nc.jetstream()
        async with app.router.lifespan_context(app):
            started = time.perf_counter()
            for user, password in users.items():
                for event in enable_events(
                    dovecot, transit, f"m{user}", user, password, port=port, max_concurrent_connections=300
                ):
                    env = make_envelope(event, "bench")
                    await js.publish(event.SUBJECT, env.to_bytes(), headers={"Nats-Msg-Id": str(env.id)})
            stored, deadline = 0, time.perf_counter() + 120 + total / 10
            while stored < total and time.perf_counter() < deadline:
                await asyncio.sleep(0.2)
                info = await js.stream_info("MW_EMAIL", subjects_filter="mailwarden.email.received.>")
                stored = sum((info.state.subjects or {}).values())
            elapsed = time.perf_counter() - started
        await nc.drain()
    return stored, elapsed


async def main(args: argparse.Namespace) -> dict[str, Any]:
    work = workdir()
    certs = TestCertificates.create(work / "certs")
    users = users_of(args.mailboxes)
    total = args.mailboxes * args.messages
    sample = dict(list(users.items())[: args.script_sample])
    tuning = {**dovecot_tuning(os.cpu_count() or 1), "max_userip_connections": 10_000}
    out: dict[str, Any] = {"mailboxes": args.mailboxes, "messages_each": args.messages, "rows": []}
    try:
        with DovecotServer(work / "dovecot", certs, users, **tuning) as dovecot:  # type: ignore[arg-type]
            await asyncio.to_thread(fill, dovecot, users, args.messages)
            for rtt in [float(r) for r in args.rtt.split(",")]:
                with ExitStack() as stack:
                    port = dovecot.imaps_port
                    if rtt:
                        proxy = LatencyProxyProcess(work / f"proxy-{rtt:g}", dovecot.imaps_port, rtt / 2)
                        port = stack.enter_context(proxy).port
                    n, s = await asyncio.to_thread(imaplib_script, port, certs.ca, sample)
                    row: dict[str, Any] = {"rtt_ms": rtt, "imaplib_script_msg_per_s": round(n / s, 1)}
                    n, s = await aioimaplib_loop(port, certs.ca, users, args.concurrency)
                    row["aioimaplib_loop_msg_per_s"] = round(n / s, 1)
                    row["aioimaplib_loop_messages"] = n
                    n, s = await sync_svc(work / f"sync-{rtt:g}", dovecot, port, certs, users, total)
                    row["sync_svc_msg_per_s"] = round(n / s, 1)
                    row["sync_svc_messages"] = n
                    row["sync_svc_vs_script"] = round(
                        row["sync_svc_msg_per_s"] / row["imaplib_script_msg_per_s"], 1
                    )
                    row["sync_svc_vs_loop"] = round(
                        row["sync_svc_msg_per_s"] / row["aioimaplib_loop_msg_per_s"], 2
                    )
                    print(json.dumps(row), flush=True)
                    out["rows"].append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=100)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--rtt", default="0,50", help="round-trip times in ms, comma-separated (0 = direct)")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--script-sample", type=int, default=10)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = asyncio.run(main(args))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
