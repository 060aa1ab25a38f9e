"""sync-svc on one big mailbox: messages/s from the IMAP server to EmailReceived, beside other clients.

    .venv/bin/python -m bench.sync_one_mailbox --messages 10000 --rtt 0,50 [--json out.json]

Starts a tuned private Dovecot (one user), fills the INBOX with N messages (written into the
maildir: ~4 KB of text each, every tenth with a 24 KB PDF attachment), then, per round-trip time
(RTT 0: direct; else through bench/latency_proxy.py, RTT / 2 each way), on the same mailbox:

1. ``imaplib script``: what an admin would write: SELECT, SEARCH, one ``FETCH RFC822`` per
   message, ``email`` with the default policy; on ``--script-sample`` messages (its rate does not
   depend on how many follow);
2. ``aioimaplib loop``: ``FETCH a:b BODY.PEEK[]`` of 500 messages at a time, nothing parsed (the
   Python client limit);
3. ``mailnet loop`` / ``mailnet + parse``: our IMAP client, ``UID FETCH`` of 100 at a time, without
   and with sync-svc's parse (headers, preview, attachments);
4. ``imapflow + mailparser``: bench/node/sync_inbox.js, what a team might pick instead (installed
   with ``npm ci --prefix bench/node`` from the pinned package-lock.json when missing);
5. ``sync-svc`` itself, in this process: from the events that enable the mailbox to the N-th
   EmailReceived stored in JetStream (raw bytes in the object store, event published, ledger and
   watermark in the database), with the CPU of sync-svc, nats-server and the Mongo-wire server.

Every row times connect → last message (sync-svc: enabling events → last EmailReceived stored)
and reports the CPU its client process used per message.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import email
import email.policy
import imaplib
import json
import os
import resource
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aioimaplib
import nats
import psutil
from fastapi import FastAPI
from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import SecretStr

from bench.latency_proxy import LatencyProxyProcess
from bench.seed import enabled_mailbox, org_events, publish
from bench.stack import dovecot_tuning
from contracts.events import Event, ProfileCreated
from contracts.models import Direction, Endpoint, Owner, OwnerKind, TlsMode
from mailwarden_mailnet.imap import ImapClient
from mailwarden_mailnet.login import Login
from mailwarden_mailnet.resolve import StaticResolver
from mailwarden_mailnet.tls import TlsContexts
from mailwarden_mailnet.wire import Limits, Wire, connect_first
from mailwarden_runtime.crypto import KeyRing
from mailwarden_runtime.sealing import seal_for_use
from mailwarden_servers import DovecotServer, MongoWireServer, NatsServer, TestCertificates
from mailwarden_servers.dovecot import MAIL_GID, MAIL_UID

USER, PASSWORD, MAILBOX = "bench", "bench-pw", "mbx-bench"
NODE_DIR = Path(__file__).resolve().parent / "node"
OWNER = Owner(kind=OwnerKind.USER, id="u1", name="Bench", email="bench@example.org")
PDF = base64.encodebytes(os.urandom(24_000)).decode().replace("\n", "\r\n")
TEXT = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor. " * 48).strip()


def message(n: int) -> bytes:
    head = (
        f"From: Customer {n} <c{n}@example.org>\r\nTo: desk@example.org\r\nSubject: Request {n}\r\n"
        f"Message-ID: <req-{n}@example.org>\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    )
    if n % 10:
        return (head + f"Content-Type: text/plain; charset=utf-8\r\n\r\n{TEXT}\r\n").encode()
    return (
        head + 'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n'
        f"{TEXT}\r\n--b\r\nContent-Type: application/pdf; name=a.pdf\r\nContent-Disposition: attachment; "
        f"filename=a.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n{PDF}--b--\r\n"
    ).encode()


def fill(dovecot: DovecotServer, count: int) -> int:
    """Write the messages into the maildir (Dovecot indexes them at the first SELECT)."""
    imap = imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
    imap.login(USER, PASSWORD)  # creates the maildir
    imap.select("INBOX")
    imap.logout()
    new = dovecot.mail_dir / USER / "Maildir" / "new"
    total = 0
    for n in range(count):
        raw = message(n)
        path = new / f"{1_700_000_000 + n}.M{n}P1.bench"
        path.write_bytes(raw)
        if os.geteuid() == 0:
            os.chown(path, MAIL_UID, MAIL_GID)
        total += len(raw)
    return total


async def bare_loop(port: int, ca: Path, parse: bool) -> tuple[int, float]:
    """Messages fetched (and parsed) per second on one connection: the client-side limit."""
    from sync_svc.parse import parse_message

    started = time.perf_counter()
    sock, _ = await connect_first(["127.0.0.1"], port)
    wire = await Wire.open(sock, Limits(65_536, 1 << 24), TlsContexts(str(ca)).verifying, "mail.test")
    client = ImapClient(wire)
    await client.greeting()
    caps = await client.capabilities()
    await client.authenticate(Login.model_validate({"username": USER, "password": PASSWORD}), caps)
    selected = await client.select(b"INBOX", read_only=True)
    count = 0
    for first in range(1, selected.exists + 1, 100):
        uids = b"%d:%d" % (first, min(first + 99, selected.exists))
        async for item in client.uid_fetch(uids, b"UID RFC822.SIZE BODY.PEEK[]", 1 << 24):
            if parse:
                parse_message(item.sections.get("BODY[]", b""), 500)
            count += 1
    elapsed = time.perf_counter() - started
    wire.abort()
    return count, elapsed


def tls_context(ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False  # connected to 127.0.0.1 or the proxy, not to the certificate's name
    return ctx


def imaplib_read_inbox(
    port: int, ctx: ssl.SSLContext, user: str, password: str, sample: int | None = None
) -> int:
    """One INBOX as an admin's script reads it: SEARCH ALL, one FETCH per message, full parse (the
    first ``sample`` messages when given); the messages read."""
    imap = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=ctx)
    imap.login(user, password)
    imap.select("INBOX", readonly=True)
    _, data = imap.search(None, "ALL")
    count = 0
    for num in data[0].split()[:sample]:
        _, parts = imap.fetch(num, "(RFC822)")
        raw = parts[0][1] if parts and isinstance(parts[0], tuple) else b""
        email.message_from_bytes(raw, policy=email.policy.default)
        count += 1
    imap.logout()
    return count


def imaplib_script(port: int, ca: Path, sample: int) -> tuple[int, float]:
    """What an admin would write: one FETCH per message, full parse; the first ``sample`` messages."""
    started = time.perf_counter()
    count = imaplib_read_inbox(port, tls_context(ca), USER, PASSWORD, sample)
    return count, time.perf_counter() - started


async def aioimaplib_loop(port: int, ca: Path, per_command: int = 500) -> tuple[int, float]:
    """The bare aioimaplib loop: ``FETCH a:b BODY.PEEK[]`` of ``per_command`` messages at a time,
    nothing parsed or stored (one FETCH of a 10,000-message INBOX takes aioimaplib ~70 s: it
    re-joins its buffer as the response grows)."""
    started = time.perf_counter()
    imap = aioimaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=tls_context(ca), timeout=300)
    await imap.wait_hello_from_server()
    await imap.login(USER, PASSWORD)
    selected = await imap.select("INBOX")
    exists = next(int(line.split()[0]) for line in selected.lines if line.endswith(b"EXISTS"))
    count = 0
    for first in range(1, exists + 1, per_command):
        fetched = await imap.fetch(f"{first}:{min(first + per_command - 1, exists)}", "(BODY.PEEK[])")
        count += sum(1 for line in fetched.lines if b" FETCH " in bytes(line))
    await imap.logout()
    return count, time.perf_counter() - started


def node_ready() -> str | None:
    """None when bench/node can run; else why not. Installs the pinned packages when missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node/npm not found on PATH: install Node.js >= 18 for the imapflow + mailparser row"
    if not (NODE_DIR / "node_modules").is_dir():
        print("bench: installing bench/node (npm ci --prefix bench/node)", file=sys.stderr, flush=True)
        done = subprocess.run(
            ["npm", "ci", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            return f"npm ci --prefix bench/node failed: {done.stderr.strip()[-500:]}"
    return None


async def imapflow_mailparser(port: int, ca: Path) -> tuple[int, float, float]:
    """bench/node/sync_inbox.js on the INBOX: messages, seconds (its own clock), its CPU seconds."""
    opts = {"host": "127.0.0.1", "port": port, "servername": "mail.test", "user": USER, "password": PASSWORD}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = await asyncio.create_subprocess_exec(
        "node", str(NODE_DIR / "sync_inbox.js"), json.dumps({**opts, "ca": str(ca)}),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"sync_inbox.js failed: {err.decode(errors='replace')[-800:]}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return int(result["messages"]), float(result["seconds"]), cpu


def enable_events(
    dovecot: DovecotServer,
    transit: KeyRing,
    mailbox_id: str = MAILBOX,
    user: str = USER,
    password: str = PASSWORD,
    port: int | None = None,
    **advanced: Any,
) -> list[Event]:
    """The events that make sync-svc sync one mailbox, as profile-svc and mailbox-svc publish them
    (``port``: where the server is reached, e.g. a latency proxy; Dovecot's IMAPS port by default)."""
    now = datetime.now(UTC)
    port = port or dovecot.imaps_port
    endpoint = Endpoint(host="mail.test", port=port, tls=TlsMode.IMPLICIT)
    outgoing = Endpoint(host="mail.test", port=465, tls=TlsMode.IMPLICIT)
    org = org_events(
        f"p-{mailbox_id}",
        OWNER,
        endpoint,
        outgoing,
        [port],
        now,
        **{"process_email_from": date(2000, 1, 1), **advanced},
    )
    profile = org[-1]
    assert isinstance(profile, ProfileCreated)
    email = f"{user}@mail.test"
    return org + enabled_mailbox(
        profile, mailbox_id, email, (user, password), Direction.INCOMING, transit, now
    )


async def serve_logins(
    nc: Client,
    transit: KeyRing,
    dovecot: DovecotServer,
    logins: dict[str, tuple[str, str]],
    port: int | None = None,
) -> None:
    """Answer mailbox-svc's ``login`` operation for the benchmark's mailboxes (no mailbox-svc runs
    here): each login sealed for its use, as mailbox-svc seals it (service token not checked)."""

    async def answer(msg: Msg) -> None:
        req = json.loads(msg.data)
        user, password = logins[req["mailbox_id"]]
        not_after = datetime.now(UTC) + timedelta(seconds=300)
        at = port or dovecot.imaps_port
        sealed = seal_for_use(
            transit, user, SecretStr(password), purpose=req["purpose"], mailbox_id=req["mailbox_id"],
            direction=req["direction"], host="mail.test", port=at, not_after=not_after,
        )  # fmt: skip
        result = {
            "mailbox_id": req["mailbox_id"],
            "direction": req["direction"],
            "purpose": req["purpose"],
            "host": "mail.test",
            "port": at,
            "not_after": not_after.replace(microsecond=0).isoformat(),
            "sealed": sealed.model_dump(mode="json"),
        }
        await msg.respond(json.dumps({"ok": True, "result": result}).encode())

    await nc.subscribe("mailwarden.rpc.mailbox-svc.login", cb=answer)


def sync_app(
    nats_server: NatsServer, mongo: MongoWireServer, certs: TestCertificates, key_text: str, **settings: Any
) -> FastAPI:
    """sync-svc for this process: the private servers, loopback allowed, the test CA, no polling."""
    from sync_svc.app import create_app
    from sync_svc.config import Settings

    values: dict[str, Any] = {
        "nats_url": nats_server.url,
        "mongodb_uri": mongo.uri,
        "mongodb_db": f"b_{uuid.uuid4().hex[:8]}",
        "log_setup": False,
        "transit_keys": key_text,
        "sync_allow_networks": "127.0.0.0/8",
        "sync_ca_file": str(certs.ca),
        "sync_reconcile_s": 0.2,
        "sync_poll_floor_s": 3600,
        **settings,
    }
    return create_app(Settings(**values), resolver=StaticResolver({"mail.test": ["127.0.0.1"]}))


async def run_sync(
    work: Path,
    dovecot: DovecotServer,
    certs: TestCertificates,
    count: int,
    port: int | None = None,
    settings: dict[str, str] | None = None,
) -> dict[str, Any]:
    key_text = KeyRing.generate_key_text("transit-bench")
    with NatsServer(work / "nats") as nats_server, MongoWireServer(work / "mongo") as mongo:
        app = sync_app(nats_server, mongo, certs, key_text, **(settings or {}))
        nc = await nats.connect(nats_server.url)
        await serve_logins(nc, KeyRing.parse(key_text), dovecot, {MAILBOX: (USER, PASSWORD)}, port)
        js = nc.jetstream()
        subject = f"mailwarden.email.received.{MAILBOX}"
        side = [psutil.Process(nats_server.pid), psutil.Process(mongo.pid)]
        async with app.router.lifespan_context(app):
            await asyncio.wait_for(app.state.worker.loaded.wait(), 60)  # ready: its first reload done
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            side0 = [p.cpu_times() for p in side]
            started = time.perf_counter()
            await publish(js, enable_events(dovecot, KeyRing.parse(key_text), port=port))
            first_at = None
            stored = 0
            deadline = time.perf_counter() + 120 + count / 20
            while stored < count:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"{stored} of {count} EmailReceived stored before the deadline")
                await asyncio.sleep(0.1)
                info = await js.stream_info("MW_EMAIL", subjects_filter=subject)
                stored = sum((info.state.subjects or {}).values())
                if stored and first_at is None:
                    first_at = time.perf_counter()
            elapsed = time.perf_counter() - started
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            side1 = [p.cpu_times() for p in side]
        await nc.drain()
    own_cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    own_sys = cpu1.ru_stime - cpu0.ru_stime
    side_cpu = [(b.user + b.system) - (a.user + a.system) for a, b in zip(side0, side1, strict=True)]
    return {
        "messages": stored,
        "seconds": round(elapsed, 3),
        "messages_per_s": round(stored / elapsed, 1),
        "first_event_after_s": round((first_at or elapsed) - started, 3),
        "steady_messages_per_s": round(stored / max(elapsed - ((first_at or 0) - started), 1e-9), 1),
        "cpu_ms_per_message": {
            "sync_svc_process": round(own_cpu * 1000 / stored, 3),
            "sync_svc_process_system": round(own_sys * 1000 / stored, 3),
            "nats_server": round(side_cpu[0] * 1000 / stored, 3),
            "mongo_wire_server": round(side_cpu[1] * 1000 / stored, 3),
        },
    }


def workdir() -> Path:
    work = Path(tempfile.mkdtemp(prefix="mw-sync-bench-"))
    work.chmod(0o755)  # Dovecot's unprivileged processes must traverse it
    return work


Timed = Callable[[], Awaitable[tuple[int, float]]]


async def timed_row(name: str, run: Timed) -> dict[str, Any]:
    """One client row: messages, msg/s and the CPU of this process per message."""
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    count, seconds = await run()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    row = {"messages": count, "seconds": round(seconds, 3), "messages_per_s": round(count / seconds, 1)}
    row["client_cpu_ms_per_message"] = round(cpu * 1000 / max(count, 1), 3)
    print(f"bench: {name}: {json.dumps(row)}", file=sys.stderr, flush=True)
    return row


async def rtt_rows(
    work: Path,
    dovecot: DovecotServer,
    certs: TestCertificates,
    port: int,
    args: argparse.Namespace,
    node: str | None,
) -> dict[str, Any]:
    ca = certs.ca
    rows: dict[str, Any] = {}
    settings = dict(kv.split("=", 1) for kv in args.sync_setting)
    if args.only_sync:
        return {"sync_svc": await run_sync(work, dovecot, certs, args.messages, port, settings)}
    sample = min(args.script_sample, args.messages)
    rows["imaplib_script"] = await timed_row(
        "imaplib script", lambda: asyncio.to_thread(imaplib_script, port, ca, sample)
    )
    rows["aioimaplib_loop"] = await timed_row("aioimaplib loop", lambda: aioimaplib_loop(port, ca))
    rows["mailnet_loop"] = await timed_row("mailnet loop", lambda: bare_loop(port, ca, parse=False))
    rows["mailnet_parse"] = await timed_row("mailnet + parse", lambda: bare_loop(port, ca, parse=True))
    if node is None:
        count, seconds, cpu = await imapflow_mailparser(port, ca)
        rows["imapflow_mailparser"] = {
            "messages": count,
            "seconds": round(seconds, 3),
            "messages_per_s": round(count / seconds, 1),
            "client_cpu_ms_per_message": round(cpu * 1000 / max(count, 1), 3),
        }
        print(f"bench: imapflow + mailparser: {json.dumps(rows['imapflow_mailparser'])}", file=sys.stderr)
    else:
        rows["imapflow_mailparser"] = {"skipped": node}
    rows["sync_svc"] = await run_sync(work, dovecot, certs, args.messages, port, settings)
    print(f"bench: sync-svc: {json.dumps(rows['sync_svc'])}", file=sys.stderr, flush=True)
    return rows


async def main(args: argparse.Namespace) -> dict[str, Any]:
    work = workdir()
    certs = TestCertificates.create(work / "certs")
    tuning = dovecot_tuning(os.cpu_count() or 1)
    node = node_ready() if args.node else "--no-node"
    if node is not None:
        print(f"bench: imapflow + mailparser row skipped: {node}", file=sys.stderr, flush=True)
    result: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, "-m", "bench.sync_one_mailbox", *sys.argv[1:]]),
        "messages": args.messages,
        "machine_cores": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "rows": {},
    }
    try:
        with DovecotServer(work / "dovecot", certs, {USER: PASSWORD}, **tuning) as dovecot:  # type: ignore[arg-type]
            result["inbox_bytes"] = fill(dovecot, args.messages)
            await bare_loop(dovecot.imaps_port, certs.ca, parse=False)  # Dovecot indexes the INBOX once
            for rtt in [float(r) for r in args.rtt.split(",")]:
                with ExitStack() as stack:
                    port = dovecot.imaps_port
                    if rtt:
                        proxy = LatencyProxyProcess(work / f"proxy-{rtt:g}", dovecot.imaps_port, rtt / 2)
                        port = stack.enter_context(proxy).port
                    rows = await rtt_rows(work / f"rtt-{rtt:g}", dovecot, certs, port, args, node)
                if args.only_sync:
                    result["rows"][f"{rtt:g}"] = rows
                    continue
                flow = rows["imapflow_mailparser"].get("messages_per_s")
                if flow:
                    rows["sync_svc_vs_imapflow"] = round(rows["sync_svc"]["messages_per_s"] / flow, 2)
                rows["sync_svc_vs_script"] = round(
                    rows["sync_svc"]["messages_per_s"] / rows["imaplib_script"]["messages_per_s"], 1
                )
                result["rows"][f"{rtt:g}"] = rows
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def table(result: dict[str, Any]) -> str:
    """The figures as a Markdown table (msg/s, and client CPU ms per message)."""
    names = [
        ("imaplib_script", "imaplib script"),
        ("aioimaplib_loop", "aioimaplib loop"),
        ("mailnet_loop", "mailnet loop"),
        ("mailnet_parse", "mailnet + parse"),
        ("imapflow_mailparser", "imapflow + mailparser"),
        ("sync_svc", "sync-svc"),
    ]
    rtts = list(result["rows"])
    lines = ["| row | " + " | ".join(f"RTT {r} ms: msg/s (CPU ms/msg)" for r in rtts) + " |"]
    lines.append("|---" * (len(rtts) + 1) + "|")
    for key, label in names:
        cells = []
        for r in rtts:
            row = result["rows"][r][key]
            if "skipped" in row:
                cells.append("skipped")
                continue
            cpu = row.get("client_cpu_ms_per_message") or row.get("cpu_ms_per_message", {}).get(
                "sync_svc_process"
            )
            cells.append(f"{row['messages_per_s']:,} ({cpu})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    ratio = " | ".join(str(result["rows"][r].get("sync_svc_vs_imapflow", "-")) for r in rtts)
    lines.append(f"| sync-svc / imapflow | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rtt", default="0,50", help="round-trip times in ms, comma-separated (0 = direct)")
    parser.add_argument("--script-sample", type=int, default=500, help="messages the imaplib script fetches")
    parser.add_argument(
        "--sync-setting",
        action="append",
        default=[],
        help="sync-svc setting name=value, e.g. sync_fetch_batch=200",
    )
    parser.add_argument("--only-sync", action="store_true", help="only the sync-svc row (profiling)")
    parser.add_argument("--no-node", dest="node", action="store_false", help="skip imapflow + mailparser")
    parser.add_argument("--json", type=Path, default=None)
    parsed = parser.parse_args()
    out = asyncio.run(main(parsed))
    print(json.dumps(out, indent=2))
    if not parsed.only_sync:
        print(table(out))
    if parsed.json:
        parsed.json.write_text(json.dumps(out, indent=2) + "\n")
