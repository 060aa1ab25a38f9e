"""sync-svc on one big mailbox: messages/s from the IMAP server to EmailReceived in JetStream.

    .venv/bin/python -m bench.sync_one_mailbox --messages 10000 [--json out.json]

Starts a tuned private Dovecot (one user), nats-server and the Mongo-wire server, fills the
INBOX with N messages (written into the maildir: ~4 KB of text each, every tenth with a 24 KB
PDF attachment), then measures on the same mailbox:

1. the bare client loop: our IMAP client, ``UID FETCH 1:* BODY.PEEK[]`` in batches, nothing
   else (what the server and one connection allow);
2. the same loop parsing each message as sync-svc does (headers, preview, attachments);
3. sync-svc itself, in this process: from the events that enable the mailbox to the N-th
   EmailReceived stored in JetStream (raw bytes in the object store, event published, ledger
   and watermark in the database), with the CPU it used.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import imaplib
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nats
import psutil
from fastapi import FastAPI
from nats.aio.client import Client
from nats.aio.msg import Msg
from pydantic import SecretStr

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


async def bare_loop(dovecot: DovecotServer, ca: Path, parse: bool) -> tuple[int, float]:
    """Messages fetched (and parsed) per second on one connection: the client-side limit."""
    from sync_svc.parse import parse_message

    sock, _ = await connect_first(["127.0.0.1"], dovecot.imaps_port)
    wire = await Wire.open(sock, Limits(65_536, 1 << 24), TlsContexts(str(ca)).verifying, "mail.test")
    client = ImapClient(wire)
    await client.greeting()
    caps = await client.capabilities()
    await client.authenticate(Login.model_validate({"username": USER, "password": PASSWORD}), caps)
    selected = await client.select(b"INBOX", read_only=True)
    started = time.perf_counter()
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


async def run_sync(work: Path, dovecot: DovecotServer, certs: TestCertificates, count: int) -> dict[str, Any]:
    key_text = KeyRing.generate_key_text("transit-bench")
    with NatsServer(work / "nats") as nats_server, MongoWireServer(work / "mongo") as mongo:
        app = sync_app(nats_server, mongo, certs, key_text)
        nc = await nats.connect(nats_server.url)
        await serve_logins(nc, KeyRing.parse(key_text), dovecot, {MAILBOX: (USER, PASSWORD)})
        js = nc.jetstream()
        subject = f"mailwarden.email.received.{MAILBOX}"
        side = [psutil.Process(nats_server.pid), psutil.Process(mongo.pid)]
        async with app.router.lifespan_context(app):
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            side0 = [p.cpu_times() for p in side]
            started = time.perf_counter()
            await publish(js, enable_events(dovecot, KeyRing.parse(key_text)))
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
    side_cpu = [(b.user + b.system) - (a.user + a.system) for a, b in zip(side0, side1, strict=True)]
    return {
        "messages": stored,
        "seconds": round(elapsed, 3),
        "messages_per_s": round(stored / elapsed, 1),
        "first_event_after_s": round((first_at or elapsed) - started, 3),
        "steady_messages_per_s": round(stored / max(elapsed - ((first_at or 0) - started), 1e-9), 1),
        "cpu_ms_per_message": {
            "sync_svc_process": round(own_cpu * 1000 / stored, 3),
            "nats_server": round(side_cpu[0] * 1000 / stored, 3),
            "mongo_wire_server": round(side_cpu[1] * 1000 / stored, 3),
        },
    }


def workdir() -> Path:
    work = Path(tempfile.mkdtemp(prefix="mw-sync-bench-"))
    work.chmod(0o755)  # Dovecot's unprivileged processes must traverse it
    return work


async def main(args: argparse.Namespace) -> dict[str, Any]:
    work = workdir()
    certs = TestCertificates.create(work / "certs")
    tuning = dovecot_tuning(os.cpu_count() or 1)
    result: dict[str, Any] = {"messages": args.messages, "machine_cores": os.cpu_count()}
    try:
        with DovecotServer(work / "dovecot", certs, {USER: PASSWORD}, **tuning) as dovecot:  # type: ignore[arg-type]
            result["inbox_bytes"] = fill(dovecot, args.messages)
            count, seconds = await bare_loop(dovecot, certs.ca, parse=False)  # also warms Dovecot's index
            count, seconds = await bare_loop(dovecot, certs.ca, parse=False)
            result["bare_fetch_messages_per_s"] = round(count / seconds, 1)
            count, seconds = await bare_loop(dovecot, certs.ca, parse=True)
            result["fetch_and_parse_messages_per_s"] = round(count / seconds, 1)
            result["sync_svc"] = await run_sync(work, dovecot, certs, args.messages)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--json", type=Path, default=None)
    parsed = parser.parse_args()
    out = asyncio.run(main(parsed))
    print(json.dumps(out, indent=2))
    if parsed.json:
        parsed.json.write_text(json.dumps(out, indent=2) + "\n")
