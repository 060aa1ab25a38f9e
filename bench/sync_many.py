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
import imaplib
import json
import os
import resource
import shutil
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aioimaplib
import nats
import psutil
from pymongo import MongoClient

from bench.docwrites import DocumentWrites
from bench.latency_proxy import LatencyProxyProcess
from bench.stack import dovecot_tuning
from bench.sync_one_mailbox import (
    enable_events,
    imaplib_read_inbox,
    message,
    serve_logins,
    sync_app,
    tls_context,
    workdir,
)
from contracts.envelope import make_envelope
from mailwarden_runtime.crypto import KeyRing
from mailwarden_servers import DovecotServer, MongoWireServer, NatsServer, TestCertificates
from mailwarden_servers.dovecot import MAIL_GID, MAIL_UID

PUBLISH_AT_ONCE = 500  # enabling events sent before their acks are awaited


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


def imaplib_script(port: int, ca: Path, users: dict[str, str]) -> tuple[int, float]:
    """One mailbox after the other, one FETCH per message, full parse: messages and seconds."""
    ctx = tls_context(ca)
    count = 0
    started = time.perf_counter()
    for user, password in users.items():
        count += imaplib_read_inbox(port, ctx, user, password)
    return count, time.perf_counter() - started


async def aioimaplib_loop(port: int, ca: Path, users: dict[str, str], concurrency: int) -> tuple[int, float]:
    """Every mailbox, ``concurrency`` at once, one FETCH of the whole INBOX each: messages and seconds."""
    ctx = tls_context(ca)
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


def opcounters(uri: str) -> dict[str, int]:
    """The database's serverStatus opcounters (one per command: a bulk write of 100 is one)."""
    client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=5000)
    try:
        return {k: int(v) for k, v in client.admin.command("serverStatus")["opcounters"].items()}
    finally:
        client.close()


async def sync_svc(
    work: Path,
    dovecot: DovecotServer,
    port: int,
    certs: TestCertificates,
    users: dict[str, str],
    total: int,
    count_writes: bool = False,
) -> dict[str, Any]:
    """sync-svc in this process: events that enable every mailbox → the last EmailReceived stored;
    with the CPU of each process and the database commands (and, ``count_writes``, the documents
    written, from a change stream: one more reader on the database) per mailbox."""
    key_text = KeyRing.generate_key_text("transit-bench")
    transit = KeyRing.parse(key_text)
    with NatsServer(work / "nats") as nats_server, MongoWireServer(work / "mongo") as mongo:
        app = sync_app(nats_server, mongo, certs, key_text, sync_max_sessions=10_000)
        nc = await nats.connect(nats_server.url)
        await serve_logins(nc, transit, dovecot, {f"m{u}": (u, p) for u, p in users.items()}, port)
        js = nc.jetstream()
        side = {
            "nats_server": psutil.Process(nats_server.pid),
            "mongo_wire_server": psutil.Process(mongo.pid),
        }
        with ExitStack() as counting:
            writes = counting.enter_context(DocumentWrites(mongo.uri)) if count_writes else None
            async with app.router.lifespan_context(app):
                await asyncio.wait_for(app.state.worker.loaded.wait(), 60)  # ready: the clock starts after
                # Built before the clock starts (as mailbox-svc and profile-svc would have them), then
                # published without a round trip each: awaited one by one, in the process that also
                # runs sync-svc, the 2,000 of 500 mailboxes took 42 s, and the row measured that.
                events = [
                    (event.SUBJECT, make_envelope(event, "bench"))
                    for user, password in users.items()
                    for event in enable_events(
                        dovecot,
                        transit,
                        f"m{user}",
                        user,
                        password,
                        port=port,
                        max_concurrent_connections=300,
                    )
                ]
                ops0 = opcounters(mongo.uri)
                own0 = resource.getrusage(resource.RUSAGE_SELF)
                side0 = {k: p.cpu_times() for k, p in side.items()}
                started = time.perf_counter()
                for i in range(0, len(events), PUBLISH_AT_ONCE):
                    acks = [
                        await js.publish_async(subject, env.to_bytes(), headers={"Nats-Msg-Id": str(env.id)})
                        for subject, env in events[i : i + PUBLISH_AT_ONCE]
                    ]
                    await asyncio.gather(*acks)
                enabled_after = time.perf_counter() - started
                stored, deadline, first_at, shown = 0, time.perf_counter() + 120 + total / 10, 0.0, 0.0
                while stored < total and time.perf_counter() < deadline:
                    info = await js.stream_info("MW_EMAIL", subjects_filter="mailwarden.email.received.>")
                    stored = sum((info.state.subjects or {}).values())
                    now = time.perf_counter() - started
                    first_at = first_at or (now if stored else 0.0)
                    if now - shown >= 10:
                        shown = now
                        print(f"sync-svc: {stored} of {total} stored after {now:.0f} s", file=sys.stderr)
                    if stored < total:
                        await asyncio.sleep(0.2)
                elapsed = time.perf_counter() - started
                own1 = resource.getrusage(resource.RUSAGE_SELF)
                side1 = {k: p.cpu_times() for k, p in side.items()}
                ops1 = opcounters(mongo.uri)
                await asyncio.sleep(1.5 if count_writes else 0)  # the change stream's last batch
        await nc.drain()
    n = max(len(users), 1)
    cpu = {"bench_process_sync_svc": (own1.ru_utime + own1.ru_stime) - (own0.ru_utime + own0.ru_stime)}
    cpu |= {k: (side1[k].user + side1[k].system) - (side0[k].user + side0[k].system) for k in side}
    ops = {k: ops1[k] - ops0.get(k, 0) for k in ops1 if ops1[k] - ops0.get(k, 0)}
    out: dict[str, Any] = {
        "stored": stored,
        "seconds": elapsed,
        "events_published_after_s": round(enabled_after, 1),
        "first_email_seen_after_s": round(first_at, 1),
        "cpu_s": {k: round(v, 1) for k, v in cpu.items()},
        "db_commands_per_mailbox": {k: round(v / n, 2) for k, v in sorted(ops.items())},
    }
    if writes is not None:
        docs = {
            f"{ns} {op}": c for (ns, op), c in sorted(writes.counts.items()) if not ns.startswith("local.")
        }
        out["docs_written_per_mailbox"] = {k: round(v / n, 2) for k, v in docs.items()}
        out["docs_written_per_message"] = round(sum(docs.values()) / max(stored, 1), 3)
    return out


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
                    row: dict[str, Any] = {"rtt_ms": rtt}
                    if not args.only_sync:
                        n, s = await asyncio.to_thread(imaplib_script, port, certs.ca, sample)
                        row["imaplib_script_msg_per_s"] = round(n / s, 1)
                        n, s = await aioimaplib_loop(port, certs.ca, users, args.concurrency)
                        row["aioimaplib_loop_msg_per_s"] = round(n / s, 1)
                        row["aioimaplib_loop_messages"] = n
                    sync = await sync_svc(
                        work / f"sync-{rtt:g}", dovecot, port, certs, users, total, args.count_writes
                    )
                    row["sync_svc_msg_per_s"] = round(sync["stored"] / sync["seconds"], 1)
                    row["sync_svc_messages"] = sync.pop("stored")
                    row["sync_svc_seconds"] = round(sync.pop("seconds"), 1)
                    if not args.only_sync:
                        row["sync_svc_vs_script"] = round(
                            row["sync_svc_msg_per_s"] / row["imaplib_script_msg_per_s"], 1
                        )
                        row["sync_svc_vs_loop"] = round(
                            row["sync_svc_msg_per_s"] / row["aioimaplib_loop_msg_per_s"], 2
                        )
                    row |= sync
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
    parser.add_argument("--only-sync", action="store_true", help="the sync-svc row only (profiling)")
    parser.add_argument(
        "--count-writes",
        action="store_true",
        help="count documents written (a change stream on the database)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = asyncio.run(main(args))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
