"""Outgoing mail: mails/s from SendEmailRequested to EmailSent, against two bare clients.

    .venv/bin/python -m bench.sender                       # 1,000 mails over 100 mailboxes, RTT 0
    .venv/bin/python -m bench.sender --rtt 50              # through bench.latency_proxy (25 ms each way)

Rows (same SMTP server process, same mails, same concurrency C):

- ``aiosmtplib``: the limit. C tasks; each takes a mailbox, connects, STARTTLS, logs in, sends
  that mailbox's mails on the one connection, quits.
- ``smtplib``: the standard library's client doing the same in C threads.
- ``sender-svc``: the service under uvicorn (its own process, real NATS, SecantusDB): every
  SendEmailRequested is published at once; the clock stops at the last EmailSent. The service
  stores each send (insert, claim, 'sending', outcome with its event) and publishes the outcome.

Figures are printed; nothing is asserted. Exit 1 when a row did not deliver every mail.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import re
import smtplib
import ssl
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import nats
from nats.aio.msg import Msg
from pymongo import AsyncMongoClient

from bench.latency_proxy import LatencyProxyProcess
from bench.seed import enabled_mailbox, org_events, publish
from contracts.envelope import make_envelope
from contracts.events import Event, ProfileCreated
from contracts.models import Direction, Endpoint, Owner, OwnerKind, TlsMode
from contracts.outgoing import Recipient, SendEmailRequested
from mailwarden_mailnet.login_desk import LoginDesk
from mailwarden_runtime.bus import ensure_streams
from mailwarden_runtime.crypto import KeyRing
from mailwarden_runtime.mongo import database_name
from mailwarden_runtime.settings import ServiceSettings
from mailwarden_servers import MongoWireServer, NatsServer, SmtpProcess, TestCertificates
from mailwarden_servers.devstack import ServiceProcess, ServiceSpec, load_or_create_keys
from mailwarden_servers.ports import free_port

HOST = "127.0.0.1"  # the test certificate names it: no resolver involved
SENDER = ServiceSpec("sender-svc", "sender_svc.app:create_app", 0)
BODY = "Hello,\n\nyour order ships today.\n\n-- \nThe shop\n" * 20  # ~1 KB, like a short business mail
OWNER = Owner(kind=OwnerKind.USER, id="bench", name="Bench", email="bench@example.org")


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class Row:
    name: str
    rtt_ms: float
    mails: int
    delivered: int
    seconds: float
    p50_ms: float | None = None
    p95_ms: float | None = None
    queued_s: float | None = None
    """sender-svc: from the first request published to the last one stored (its intake)."""
    sessions: str = "-"
    """sender-svc: SMTP sessions opened / reused for a mail (its metrics)."""

    @property
    def per_s(self) -> float:
        return self.mails / self.seconds if self.seconds else 0.0


def users(n: int) -> dict[str, str]:
    return {f"user{i:04d}": f"pw-{i:04d}-bench" for i in range(n)}


def message(sender: str, i: int) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "customer@example.org"
    msg["Subject"] = f"Order {i}"
    msg.set_content(BODY)
    return msg


def plan(accounts: dict[str, str], per_mailbox: int) -> list[tuple[str, str, int]]:
    return [(u, p, per_mailbox) for u, p in accounts.items()]


# --- the bare clients -----------------------------------------------------------------------------


async def aiosmtplib_loop(port: int, ctx: ssl.SSLContext, work: list[tuple[str, str, int]], c: int) -> int:
    sem = asyncio.Semaphore(c)
    sent = 0

    async def one(user: str, password: str, k: int) -> None:
        nonlocal sent
        async with sem:
            smtp = aiosmtplib.SMTP(hostname=HOST, port=port, start_tls=True, tls_context=ctx, timeout=60)
            await smtp.connect()
            await smtp.login(user, password)
            for i in range(k):
                await smtp.send_message(message(f"{user}@mail.test", i))
                sent += 1
            await smtp.quit()

    await asyncio.gather(*(one(*w) for w in work))
    return sent


def smtplib_loop(port: int, ctx: ssl.SSLContext, work: list[tuple[str, str, int]], c: int) -> int:
    def one(user: str, password: str, k: int) -> int:
        with smtplib.SMTP(HOST, port, timeout=60) as smtp:
            smtp.starttls(context=ctx)
            smtp.login(user, password)
            for i in range(k):
                smtp.send_message(message(f"{user}@mail.test", i))
        return k

    with concurrent.futures.ThreadPoolExecutor(c) as pool:
        return sum(pool.map(lambda w: one(*w), work))


# --- sender-svc -----------------------------------------------------------------------------------


def setup_events(accounts: dict[str, str], port: int, c: int) -> list[Event]:
    at = datetime.now(UTC)
    outgoing = Endpoint(host=HOST, port=port, tls=TlsMode.STARTTLS)
    incoming = Endpoint(host=HOST, port=993, tls=TlsMode.IMPLICIT)
    events = org_events(
        "bench", OWNER, incoming, outgoing, [port], at, max_concurrent_connections=min(c, 300)
    )
    profile = events[-1]
    assert isinstance(profile, ProfileCreated)
    unused = KeyRing.parse(KeyRing.generate_key_text("bench-unused"))  # sender-svc asks its logins
    for user, password in accounts.items():
        events += enabled_mailbox(
            profile, user, f"{user}@mail.test", (user, password), Direction.OUTGOING, unused, at
        )
    return events


def login_desk(accounts: dict[str, str], port: int, transit: KeyRing) -> LoginDesk:
    """mailbox-svc's ``login`` operation for the bench's mailboxes (no mailbox-svc runs here)."""
    desk = LoginDesk(transit, ttl_s=600)
    for user, password in accounts.items():
        desk.logins[user] = (user, password)
        desk.endpoints[user] = Endpoint(host=HOST, port=port, tls=TlsMode.STARTTLS)
    return desk


async def drive_sender(
    nats_url: str, mongo_uri: str, db: str, desk: LoginDesk, events: list[Event], per: int
) -> Row:
    accounts = desk.logins
    nc = await nats.connect(nats_url)
    await desk.serve(nc)
    js = nc.jetstream()
    await ensure_streams(nc, ServiceSettings(nats_url=nats_url))
    await publish(js, events)
    mongo: AsyncMongoClient[Any] = AsyncMongoClient(mongo_uri)
    boxes = mongo[database_name(db, "sender-svc")]["mailboxes"]
    deadline = time.monotonic() + 300
    while await boxes.count_documents({"enabled_outgoing": True, "snapshot": {"$ne": None}}) < len(accounts):
        if time.monotonic() > deadline:
            raise RuntimeError("sender-svc did not learn the mailboxes")
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # the profile and settings consumers too
    total = len(accounts) * per
    done = asyncio.Event()
    outcomes: list[dict[str, Any]] = []

    async def on_outcome(msg: Msg) -> None:
        outcomes.append(json.loads(msg.data))
        if len(outcomes) >= total:
            done.set()

    await nc.subscribe("mailwarden.send.*.*", cb=on_outcome)
    await nc.flush()
    requests = [
        SendEmailRequested(
            mailbox_id=user,
            idempotency_key=f"bench-{i}",
            to=[Recipient(address="customer@example.org")],
            subject=f"Order {i}",
            text=BODY,
        )
        for i in range(per)
        for user in accounts
    ]
    t0 = time.monotonic()
    published_at = datetime.now(UTC)
    await asyncio.gather(*(js.publish(r.SUBJECT, make_envelope(r, "bench").to_bytes()) for r in requests))
    try:
        await asyncio.wait_for(done.wait(), 600)
    except TimeoutError:
        _log(f"  only {len(outcomes)} outcomes of {total} in time")
    seconds = time.monotonic() - t0
    sent = [o["data"] for o in outcomes if o["type"] == "EmailSent"]
    lat = sorted(
        (datetime.fromisoformat(s["sent_at"]) - datetime.fromisoformat(s["requested_at"])).total_seconds()
        * 1000
        for s in sent
    )
    failed = [o["data"]["error"]["code"] for o in outcomes if o["type"] != "EmailSent"]
    if failed:
        _log(f"  not sent: {statistics.multimode(failed)} x{len(failed)}")
    await mongo.close()
    await nc.drain()
    p95 = lat[int(len(lat) * 0.95) - 1] if lat else None
    queued = max((datetime.fromisoformat(s["requested_at"]) for s in sent), default=None)
    row = Row("sender-svc", 0, total, len(sent), seconds, statistics.median(lat) if lat else None, p95)
    if queued is not None:
        row.queued_s = (queued - published_at).total_seconds()
    return row


def sessions(metrics_url: str) -> str:
    """Opened / reused SMTP sessions from the service's own counters."""
    with urllib.request.urlopen(metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    found = dict(re.findall(r'^mailwarden_sender_connections_total\{how="(\w+)"\} ([0-9.e+]+)$', text, re.M))
    return f"{float(found.get('opened', 0)):.0f}/{float(found.get('reused', 0)):.0f}"


# --- the run --------------------------------------------------------------------------------------


@contextmanager
def smtp_port(smtp: SmtpProcess, delay_ms: float, workdir: Path) -> Iterator[int]:
    if delay_ms <= 0:
        yield smtp.port_starttls
        return
    with LatencyProxyProcess(workdir / "proxy", smtp.port_starttls, delay_ms) as proxy:
        yield proxy.port


def run(args: argparse.Namespace, workdir: Path) -> list[Row]:
    accounts = users(args.mailboxes)
    per = max(1, args.mails // args.mailboxes)
    work = plan(accounts, per)
    total = per * len(accounts)
    certs = TestCertificates.create(workdir / "certs")
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    rows: list[Row] = []
    with SmtpProcess(workdir / "smtp", certs, accounts, pipelining=args.pipelining) as smtp:
        for rtt in args.rtt:
            with smtp_port(smtp, rtt / 2, workdir / f"rtt-{rtt:g}") as port:
                rows += run_rtt(args, workdir / f"rtt-{rtt:g}", rtt, port, ctx, certs, accounts, work, total)
    return rows


def run_rtt(
    args: argparse.Namespace,
    workdir: Path,
    rtt: float,
    port: int,
    ctx: ssl.SSLContext,
    certs: TestCertificates,
    accounts: dict[str, str],
    work: list[tuple[str, str, int]],
    total: int,
) -> list[Row]:
    """The three rows at one RTT (a fresh NATS and database for the service)."""
    rows: list[Row] = []
    per = work[0][2]
    _log(f"{total} mails over {len(accounts)} mailboxes, RTT {rtt:g} ms, concurrency {args.concurrency}")
    t0 = time.monotonic()
    sent = asyncio.run(aiosmtplib_loop(port, ctx, work, args.concurrency))
    rows.append(Row("aiosmtplib", rtt, total, sent, time.monotonic() - t0))
    _log(f"  aiosmtplib {rows[-1].per_s:.0f} mails/s")
    t0 = time.monotonic()
    sent = smtplib_loop(port, ctx, work, args.concurrency)
    rows.append(Row("smtplib", rtt, total, sent, time.monotonic() - t0))
    _log(f"  smtplib {rows[-1].per_s:.0f} mails/s")
    if args.no_service:
        return rows
    with NatsServer(workdir / "nats") as nats_server, MongoWireServer(workdir / "mongo") as mongo:
        keys = load_or_create_keys(workdir / "keys.env")
        db = "bench"
        env = {
            "MW_NATS_URL": nats_server.url,
            "MW_MONGODB_URI": mongo.uri,
            "MW_MONGODB_DB": db,
            **keys,
            "MW_SENDER_ALLOW_NETWORKS": "127.0.0.0/8",
            "MW_SENDER_CA_FILE": str(certs.ca),
            "MW_SENDER_CONCURRENCY": str(args.concurrency),
            "MW_SENDER_RATE_PER_MINUTE": "100000",
            "MW_SENDER_RATE_BURST": "100000",
            "MW_AUTH_PUBLIC_METRICS": "true",
            "MW_LOG_LEVEL": "WARNING",
        }
        transit = KeyRing.parse(keys["MW_TRANSIT_KEYS"])
        events = setup_events(accounts, port, args.concurrency)
        desk = login_desk(accounts, port, transit)
        with ServiceProcess(workdir / "logs", SENDER, free_port(), env) as service:
            row = asyncio.run(drive_sender(nats_server.url, mongo.uri, db, desk, events, per))
            row.sessions = sessions(f"{service.url}/metrics")
    row.rtt_ms = rtt
    rows.append(row)
    _log(f"  sender-svc {row.per_s:.0f} mails/s")
    return rows


def report(rows: list[Row]) -> str:
    lines = [
        f"{'runner':<12} {'RTT ms':>6} {'mails':>6} {'sent':>6} {'seconds':>8} {'mails/s':>8} {'x limit':>8} {'p50 ms':>7} {'p95 ms':>7} {'queued s':>8} {'sessions':>9}"
    ]
    for r in rows:
        limit = next((x.per_s for x in rows if x.name == "aiosmtplib" and x.rtt_ms == r.rtt_ms), 0.0)
        ratio = r.per_s / limit if limit else 0.0
        queued = f"{r.queued_s:.1f}" if r.queued_s is not None else "-"
        p50 = f"{r.p50_ms:.0f}" if r.p50_ms is not None else "-"
        p95 = f"{r.p95_ms:.0f}" if r.p95_ms is not None else "-"
        lines.append(
            f"{r.name:<12} {r.rtt_ms:>6g} {r.mails:>6} {r.delivered:>6} {r.seconds:>8.2f} {r.per_s:>8.1f} {ratio:>8.2f} {p50:>7} {p95:>7} {queued:>8} {r.sessions:>9}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sender", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=1000)
    parser.add_argument("--mailboxes", type=int, default=100)
    parser.add_argument(
        "--rtt",
        type=lambda text: [float(x) for x in text.split(",")],
        default=[0.0],
        help="round-trip times in ms, comma-separated (a proxy adds half each way): 0,50",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="connections/tasks in every row")
    parser.add_argument("--no-service", action="store_true", help="only the bare clients")
    parser.add_argument(
        "--pipelining",
        action="store_true",
        help="the server advertises PIPELINING (the sender uses it; the bare clients cannot)",
    )
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mw-bench-sender-"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    rows = run(args, workdir)
    print(report(rows))
    return 0 if all(r.delivered == r.mails for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
