"""Helpers of the sync-svc tests: the events a mailbox is enabled with, APPEND, reading events back.

The service learns mailboxes from events, as in production: :class:`Bus` publishes the profile,
settings, mailbox and MailboxStatusChanged events to JetStream, and reads back what sync-svc
published. These tests run no mailbox-svc: :class:`~mailwarden_mailnet.login_desk.LoginDesk` answers its ``login`` operation on
NATS the way mailbox-svc does (service token checked, login sealed with ``seal_for_use`` to the
purpose, mailbox, direction and the profile's current host and port, for a short time); the real
operation is covered by tests/mailbox_svc/test_login_for_use.py and the sync end-to-end test. Messages
reach the INBOX with IMAP APPEND (imaplib, so the internal date can be set).
"""

from __future__ import annotations

import asyncio
import imaplib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import nats
from nats.aio.client import Client
from nats.js.api import DeliverPolicy

from contracts.email import EmailReceived, MailboxSyncFailed, MailboxSyncRecovered
from contracts.envelope import Envelope, make_envelope, parse_envelope
from contracts.events import (
    AdvancedOptions,
    EmailSettingsChanged,
    Event,
    MailboxCreated,
    MailboxSnapshot,
    MailboxStatusChanged,
    ProfileCreated,
    ProfileSnapshot,
    ProfileUpdated,
    SettingsSnapshot,
)
from contracts.models import (
    Endpoint,
    IncomingProtocol,
    MailboxRef,
    Owner,
    OwnerKind,
    TestStatus,
    TlsMode,
)
from mailwarden_mailnet.login_desk import LoginDesk
from mailwarden_runtime.auth import bearer_header
from mailwarden_runtime.auth.bootstrap import issue_on
from mailwarden_runtime.crypto import KeyRing
from mailwarden_servers import DovecotServer, TestCertificates
from sync_svc.config import Settings

TRANSIT_TEXT = KeyRing.generate_key_text("transit-sync")
TRANSIT = KeyRing.parse(TRANSIT_TEXT)
OWNER = Owner(kind=OwnerKind.USER, id="u1", name="Ursula", email="ursula@example.com")
NAMES = {"mail.test": ["127.0.0.1"]}
NOW = datetime.now(UTC)


def settings_for(
    nats_url: str, mongo_uri: str, db: str, certs: TestCertificates, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "mongodb_uri": mongo_uri,
        "mongodb_db": db,
        "log_setup": False,
        "transit_keys": TRANSIT_TEXT,
        "sync_allow_networks": "127.0.0.0/8",
        "sync_ca_file": str(certs.ca),
        "sync_poll_floor_s": 0.3,
        "sync_poll_jitter": 0.0,
        "sync_reconcile_s": 0.2,
        "sync_lease_ttl_s": 3.0,
        "sync_retry_base_s": 0.3,
        "sync_retry_max_s": 1.0,
        "sync_step_timeout_s": 10.0,
        "shutdown_grace_s": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


def append(
    dovecot: DovecotServer, user: str, password: str, messages: list[bytes], when: datetime | None = None
) -> None:
    """IMAP APPEND over the plain port (Dovecot trusts localhost), one login for all."""
    imap = imaplib.IMAP4("127.0.0.1", dovecot.imap_port)
    try:
        imap.login(user, password)
        stamp = imaplib.Time2Internaldate((when or datetime.now(UTC)).timestamp())
        for raw in messages:
            status, _ = imap.append("INBOX", None, stamp, raw)
            assert status == "OK"
    finally:
        imap.logout()


def message(n: int, subject: str = "hello", body: str = "body text", extra: str = "") -> bytes:
    return (
        f"From: Sender <sender@example.org>\r\nTo: ursula@example.com\r\nSubject: {subject} {n}\r\n"
        f"Message-ID: <m{n}-{uuid.uuid4().hex[:8]}@example.org>\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
        f"{extra}\r\n{body} {n}\r\n"
    ).encode()


@dataclass
class Mailbox:
    """One synchronized mailbox of the test: its Dovecot user and everything the events said."""

    mailbox_id: str
    user: str
    password: str
    protocol: IncomingProtocol = IncomingProtocol.IMAP
    process_from: date | None = None
    received_after: datetime | None = None  # the mailbox's own start (overrides process_from)
    received: list[Envelope[EmailReceived]] = field(default_factory=list)


class Bus:
    """Publishes the events sync-svc learns from; reads what it published; answers login requests."""

    def __init__(self, nc: Client, dovecot: DovecotServer) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.dovecot = dovecot
        self.desk = LoginDesk(TRANSIT)

    async def serve_logins(self) -> None:
        await self.desk.serve(self.nc)

    async def publish(self, event: Event, subject: str | None = None) -> None:
        if isinstance(event, ProfileCreated | ProfileUpdated):
            self.desk.endpoints[event.profile.profile_id.removeprefix("p-")] = event.profile.incoming
        env = make_envelope(event, "pytest")
        await self.js.publish(subject or event.SUBJECT, env.to_bytes(), headers={"Nats-Msg-Id": str(env.id)})

    host = "mail.test"  # resolved by the tests' StaticResolver; a service in its own process needs an IP

    def endpoint(self, protocol: IncomingProtocol, tls: TlsMode = TlsMode.IMPLICIT) -> Endpoint:
        if protocol is IncomingProtocol.IMAP:
            port = self.dovecot.imaps_port if tls is TlsMode.IMPLICIT else self.dovecot.imap_port
        else:
            port = self.dovecot.pop3s_port if tls is TlsMode.IMPLICIT else self.dovecot.pop3_port
        return Endpoint(host=self.host, port=port, tls=tls)

    async def switch_protocol(self, box: Mailbox, protocol: IncomingProtocol, version: int = 2) -> None:
        """The mailbox's profile moves to another incoming protocol (same server, same login)."""
        box.protocol = protocol
        await self.publish(ProfileUpdated(profile=self.profile(box, version)))

    def profile(self, box: Mailbox, version: int = 1, **advanced: Any) -> ProfileSnapshot:
        return ProfileSnapshot(
            profile_id=f"p-{box.mailbox_id}",
            name="test",
            owner=OWNER,
            incoming_protocol=box.protocol,
            incoming=self.endpoint(box.protocol),
            outgoing=Endpoint(host="mail.test", port=465, tls=TlsMode.IMPLICIT),
            advanced=AdvancedOptions(process_email_from=box.process_from, **advanced),
            version=version,
            updated_at=datetime.now(UTC),
        )

    async def enable(self, box: Mailbox, password: str | None = None, **advanced: Any) -> None:
        """Profile, settings, mailbox, its login (asked from :class:`LoginDesk`) and the enablement."""
        profile_id = f"p-{box.mailbox_id}"
        ports = [
            self.dovecot.imaps_port,
            self.dovecot.pop3s_port,
            self.dovecot.imap_port,
            self.dovecot.pop3_port,
        ]
        await self.publish(
            EmailSettingsChanged(settings=SettingsSnapshot(allowed_ports=ports, version=1, updated_at=NOW))
        )
        profile = self.profile(box, **advanced)
        await self.publish(ProfileCreated(profile=profile))
        snapshot = MailboxSnapshot(
            mailbox_id=box.mailbox_id,
            email=f"{box.user}@mail.test",
            owner=OWNER,
            profile_id=profile_id,
            approval="approved",
            process_email_received_after=box.received_after,
            updated_at=NOW,
        )
        await self.publish(MailboxCreated(mailbox=snapshot))
        ref = MailboxRef(
            mailbox_id=box.mailbox_id,
            email=snapshot.email,
            owner=OWNER,
            profile_id=profile_id,
            profile_owner=OWNER,
        )
        self.desk.logins[box.mailbox_id] = (box.user, password or box.password)
        await self.publish(
            MailboxStatusChanged(
                mailbox=ref,
                incoming_status=TestStatus.SUCCESS,
                outgoing_status=TestStatus.NOT_APPLICABLE,
                enabled_incoming=True,
                enabled_outgoing=False,
            )
        )

    async def stored(self, subject: str, cls: type[Any]) -> list[Any]:
        """Every event stored in JetStream on ``subject`` (duplicates included, if any got through)."""
        info = await self.js.stream_info("MW_EMAIL", subjects_filter=subject)
        count = sum((info.state.subjects or {}).values())
        out: list[Any] = []
        if not count:
            return out
        sub = await self.js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
        try:
            while len(out) < count:
                msg = await sub.next_msg(timeout=10)
                out.append(parse_envelope(msg.data, cls))
        finally:
            await sub.unsubscribe()
        return out

    async def emails(self, box: Mailbox) -> list[Envelope[EmailReceived]]:
        return await self.stored(f"mailwarden.email.received.{box.mailbox_id}", EmailReceived)

    async def wait_emails(
        self, box: Mailbox, count: int, timeout_s: float = 20.0
    ) -> list[Envelope[EmailReceived]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            got = await self.emails(box)
            if len(got) >= count or loop.time() > deadline:
                return got
            await asyncio.sleep(0.2)

    async def sync_events(self, box: Mailbox) -> list[Envelope[Any]]:
        failed = await self.stored("mailwarden.sync.failed", MailboxSyncFailed)
        recovered = await self.stored("mailwarden.sync.recovered", MailboxSyncRecovered)
        return [e for e in failed + recovered if e.data.mailbox.mailbox_id == box.mailbox_id]


@asynccontextmanager
async def running_bus(nats_url: str, dovecot: DovecotServer) -> AsyncIterator[Bus]:
    """A :class:`Bus` on its own connection that answers ``login`` requests; drained at the end."""
    nc = await nats.connect(nats_url)
    try:
        bus = Bus(nc, dovecot)
        await bus.serve_logins()
        yield bus
    finally:
        await nc.drain()


async def rpc(bus: Bus, op: str, body: dict[str, Any]) -> dict[str, Any]:
    """One sync-svc operation over NATS request-reply, as an administrator."""
    auth = bearer_header(await issue_on(bus.nc))
    reply = await bus.nc.request(
        f"mailwarden.rpc.sync-svc.{op}", json.dumps(body).encode(), timeout=5, headers=auth
    )
    result: dict[str, Any] = json.loads(reply.data)
    return result
