"""Database round trips per MailboxStatusChanged in alert-svc, and its events/s (issue 8).

alert-svc bounds mailwarden's throughput on the embedded Mongo-wire server (4-6 ms of server CPU per
command), so what matters is how many commands one status event costs. This script starts a private
SecantusDB and NATS and measures two things:

1. **processor**: alert-svc's ``StatusProcessor`` called directly, one event at a time, with a pymongo
   ``CommandListener`` on its client: reads and writes per event for each scenario (first success,
   mailbox-scope failure, grouped failure, recovery, repeat success with a warning, the majority alert
   on a small profile, redelivered events).
2. **app**: the same events published on NATS to a running alert-svc app (consumer, outbox relay and
   channel workers included): events/s until the status consumer has drained, commands per event.

Run: ``.venv/bin/python -m bench.alert_roundtrips [--mailboxes 300] [--no-app]``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient, monitoring

from alert_svc.config import Settings
from alert_svc.processor import StatusProcessor
from alert_svc.store import Stores
from contracts.envelope import Envelope, make_envelope
from contracts.errors import ErrorCode, WarningCode
from contracts.events import MailboxStatusChanged, ProfileSnapshot
from contracts.models import (
    Endpoint,
    IncomingProtocol,
    MailboxRef,
    Owner,
    OwnerKind,
    TlsMode,
)
from contracts.testing import status_failed, status_succeeded
from mailwarden_runtime.mailboxuses import MailboxUse
from mailwarden_runtime.mongo import database_name
from mailwarden_servers import MongoWireServer, NatsServer

WRITES = {"insert", "update", "delete", "findAndModify", "bulkWrite"}
READS = {"find", "getMore", "count", "aggregate", "distinct"}
ADMIN = Owner(kind=OwnerKind.USER, id="admin", name="Admin", email="admin@example.com")


class Commands(monitoring.CommandListener):
    """Counts reads and writes sent to one database."""

    def __init__(self) -> None:
        self.db: str | None = None
        self.counts: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.db is not None and event.database_name != self.db:
            return
        if event.command_name in WRITES:
            self.counts["w"] += 1
        elif event.command_name in READS:
            self.counts["r"] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def take(self) -> tuple[int, int]:
        w, r = self.counts["w"], self.counts["r"]
        self.counts.clear()
        return w, r


def ref(n: int, profile: str = "bench") -> MailboxRef:
    owner = Owner(kind=OwnerKind.USER, id=f"u{n}", name=f"User {n}", email=f"u{n}@example.com")
    return MailboxRef(
        mailbox_id=f"{profile}-m{n:04d}",
        email=f"{profile}-m{n:04d}@example.com",
        owner=owner,
        profile_id=profile,
        profile_owner=ADMIN,
    )


@dataclass
class Scenario:
    name: str
    events: list[Envelope[MailboxStatusChanged]]


def env(data: MailboxStatusChanged) -> Envelope[MailboxStatusChanged]:
    return make_envelope(data, "bench", occurred_at=datetime.now(UTC))


def scenarios(n: int) -> list[Scenario]:
    """The workload: one profile with ``n`` mailboxes (n >= 180), plus a small one for the majority."""
    first, bad, dns = range(0, n // 3), range(n // 3, n // 3 + 40), range(n // 3 + 40, n // 3 + 80)
    rest = range(n // 3 + 80, n)
    out = [
        Scenario("success, first, no open alerts", [env(status_succeeded(ref(i), f"s1-{i}")) for i in first]),
        Scenario(
            "failure, mailbox scope",
            [env(status_failed(ref(i), f"f-{i}", ErrorCode.AUTH_FAILED)) for i in bad],
        ),
        Scenario(
            "failure, grouped (profile scope)",
            [env(status_failed(ref(i), f"g-{i}", ErrorCode.DNS_NXDOMAIN)) for i in dns],
        ),
        Scenario("recovery, mailbox scope", [env(status_succeeded(ref(i), f"r-{i}")) for i in bad]),
        Scenario("recovery, leaves the group", [env(status_succeeded(ref(i), f"rg-{i}")) for i in dns]),
        Scenario(
            "success, repeat, warning",
            [env(status_succeeded(ref(i), f"s2-{i}", (WarningCode.WEAK_TLS,))) for i in first[:40]],
        ),
        Scenario("success, first, rest", [env(status_succeeded(ref(i), f"s3-{i}")) for i in rest]),
        Scenario(
            "majority (3 of 4 fail, 1 recovers)",
            [env(status_failed(ref(i, "small"), f"mj-{i}", ErrorCode.AUTH_FAILED)) for i in range(3)]
            + [env(status_succeeded(ref(0, "small"), "mj-ok"))],
        ),
    ]
    replay = [make_envelope(e.data, "bench", occurred_at=e.occurred_at) for e in out[1].events[:20]]
    out.append(Scenario("redelivered failures (new envelope, same test)", replay))
    return out


async def seed(stores: Stores, n: int) -> None:
    """The read models as profile-svc and mailbox-svc events left them."""
    endpoint = Endpoint(host="mail.example.com", port=993, tls=TlsMode.IMPLICIT)
    for profile, count in (("bench", n), ("small", 4)):
        snapshot = ProfileSnapshot(
            profile_id=profile,
            name=f"Profile {profile}",
            owner=ADMIN,
            incoming_protocol=IncomingProtocol.IMAP,
            incoming=endpoint,
            outgoing=endpoint,
            updated_at=datetime.now(UTC),
        )
        await stores.read_models.models.put_profile(snapshot)
        uses = [
            MailboxUse(mailbox_id=ref(i, profile).mailbox_id, version=1, profile_id=profile)
            for i in range(count)
        ]
        await stores.read_models.save_mailboxes(uses)


def _rows(results: list[tuple[str, int, int, int, float]]) -> Iterator[str]:
    yield f"{'scenario':<48} {'events':>6} {'writes/ev':>9} {'reads/ev':>8} {'events/s':>8}"
    for name, events, w, r, secs in results:
        yield f"{name:<48} {events:>6} {w / events:>9.2f} {r / events:>8.2f} {events / secs:>8.1f}"
    events = sum(x[1] for x in results)
    w, r, secs = sum(x[2] for x in results), sum(x[3] for x in results), sum(x[4] for x in results)
    yield f"{'all':<48} {events:>6} {w / events:>9.2f} {r / events:>8.2f} {events / secs:>8.1f}"


async def run_processor(uri: str, work: list[Scenario], n: int, listener: Commands) -> None:
    db_name = "bench_" + uuid.uuid4().hex[:8]
    listener.db = database_name(db_name, "alert-svc")
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    try:
        stores = Stores.on(client[listener.db])
        await stores.ensure_indexes()
        await seed(stores, n)
        processor = StatusProcessor(stores, Settings(mongodb_db=db_name, dev_mode=True, log_setup=False))
        results = []
        for scenario in work:
            listener.take()
            started = time.perf_counter()
            for envelope in scenario.events:
                await processor.handle(envelope)
            secs = time.perf_counter() - started
            w, r = listener.take()
            results.append((scenario.name, len(scenario.events), w, r, secs))
        print("processor (StatusProcessor.handle, one event at a time):")
        for line in _rows(results):
            print("  " + line)
        total = await stores.alerts.alerts.count_documents({})
        opened = await stores.alerts.alerts.count_documents({"state": "open"})
        print(f"  alerts stored: {total} ({opened} open)")
    finally:
        await client.drop_database(listener.db)
        await client.close()


async def run_app(uri: str, nats_url: str, work: list[Scenario], n: int, listener: Commands) -> None:
    import nats

    from alert_svc.app import create_app

    db_name = "bench_" + uuid.uuid4().hex[:8]
    listener.db = database_name(db_name, "alert-svc")
    settings = Settings(
        nats_url=nats_url, mongodb_uri=uri, mongodb_db=db_name, dev_mode=True, log_setup=False
    )
    app = create_app(settings)
    nc = await nats.connect(nats_url)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, tz_aware=True)
    try:
        async with app.router.lifespan_context(app):
            await seed(Stores.on(client[listener.db]), n)
            js = nc.jetstream()
            events = [e for s in work for e in s.events]
            listener.take()
            started = time.perf_counter()
            for e in events:
                await js.publish(e.data.SUBJECT, e.to_bytes(), headers={"Nats-Msg-Id": str(e.id)})
            while True:
                info = await js.consumer_info("MW_CONFIG", "alert-svc-status")
                if info.num_pending == 0 and info.num_ack_pending == 0:
                    break
                await asyncio.sleep(0.05)
            secs = time.perf_counter() - started
            w, r = listener.take()
            print("app (published on NATS, until the status consumer drained; relay and channels included):")
            print(
                f"  {len(events)} events in {secs:.1f} s: {len(events) / secs:.1f} events/s, "
                f"{w / len(events):.2f} writes + {r / len(events):.2f} reads per event"
            )
    finally:
        await client.drop_database(listener.db)
        await client.close()
        await nc.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=300, help="mailboxes of the big profile (>= 180)")
    parser.add_argument("--no-app", action="store_true", help="skip the end-to-end app run")
    args = parser.parse_args()
    listener = Commands()
    monitoring.register(listener)  # every client created from here on reports to it
    with tempfile.TemporaryDirectory(prefix="alert-bench-") as tmp:
        with MongoWireServer(Path(tmp) / "mongo") as mongo, NatsServer(Path(tmp) / "nats") as nats_server:
            await run_processor(mongo.uri, scenarios(args.mailboxes), args.mailboxes, listener)
            if not args.no_app:
                await run_app(mongo.uri, nats_server.url, scenarios(args.mailboxes), args.mailboxes, listener)


if __name__ == "__main__":
    asyncio.run(main())
