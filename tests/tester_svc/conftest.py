"""Fixtures for tester-svc: a runner on test settings, request builders, hostile loopback servers."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import nats
import pytest
from pydantic import SecretStr

from contracts.envelope import make_envelope
from contracts.events import EmailSettingsChanged, SealedCredentials, SettingsSnapshot, TestRequested
from contracts.models import (
    CredentialSource,
    Direction,
    Endpoint,
    IncomingProtocol,
    MailboxRef,
    Owner,
    OwnerKind,
    ServerTarget,
    TlsMode,
)
from mailwarden_mailnet.resolve import Resolver, StaticResolver
from mailwarden_runtime.bus import ensure_streams
from mailwarden_runtime.crypto import KeyRing
from mailwarden_runtime.sealing import seal_for_test
from mailwarden_servers import TestCertificates
from tester_svc.config import Settings
from tester_svc.runner import Runner

TRANSIT = KeyRing.for_development("transit")
OWNER = Owner(kind=OwnerKind.USER, id="u1", name="Ursula", email="ursula@example.com")
PROFILE_OWNER = Owner(kind=OwnerKind.USER, id="p1", name="Paul", email="paul@example.com")
# A name the test CA's certificate carries, resolved without DNS.
MAIL_USERS_FOR_SMTP = {"alice": "alice-pw", "bob": "bob-pw"}
NAMES = {"mail.test": ["127.0.0.1"], "other.example": ["127.0.0.1"]}
WIDE_PORTS = list(range(1024, 65536))  # what make_request allows by default


async def announce_ports(settings: Settings, ports: list[int] | None = None, version: int = 1) -> None:
    """The org's settings published as profile-svc publishes them (MW_CONFIG keeps the last): a
    tester running without profile-svc takes its allowed ports from here, never from the request."""
    nc = await nats.connect(settings.nats_url)
    try:
        await ensure_streams(nc, settings)
        snapshot = SettingsSnapshot(version=version, allowed_ports=WIDE_PORTS if ports is None else ports)
        env = make_envelope(EmailSettingsChanged(settings=snapshot), "profile-svc")
        await nc.jetstream().publish(EmailSettingsChanged.SUBJECT, env.to_bytes())
    finally:
        await nc.close()


def settings_for(certs: TestCertificates, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "dev_mode": True,
        "log_setup": False,
        "tester_allow_networks": "127.0.0.0/8",
        "tester_ca_file": str(certs.ca),
        "tester_test_timeout_s": 6.0,
        "tester_step_timeout_s": 2.0,
        "tester_dns_timeout_s": 1.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def make_runner(certs: TestCertificates) -> Callable[..., Runner]:
    def make(resolver: Resolver | None = None, **overrides: Any) -> Runner:
        return Runner(
            settings_for(certs, **overrides),
            TRANSIT,
            tester="pytest",
            resolver=resolver or StaticResolver(NAMES),
        )

    return make


@pytest.fixture
def runner(make_runner: Callable[..., Runner]) -> Runner:
    return make_runner()


def seal_login(username: str, password: str, aad: str) -> Any:
    return TRANSIT.seal(json.dumps({"username": username, "password": password}).encode(), aad)


def seal_for(
    test_id: str, direction: str, endpoint: Endpoint, user: str, password: str, ttl_s: float = 600
) -> Any:
    """A login sealed like mailbox-svc seals it: to one test, direction, host and port, with an expiry."""
    return seal_for_test(
        TRANSIT,
        user,
        SecretStr(password),
        test_id=test_id,
        direction=direction,
        host=endpoint.host,
        port=endpoint.port,
        not_after=datetime.now(UTC) + timedelta(seconds=ttl_s),
    )


def make_request(
    *,
    incoming: Endpoint | None = None,
    outgoing: Endpoint | None = None,
    protocol: IncomingProtocol = IncomingProtocol.IMAP,
    user: str = "alice",
    password: str = "alice-pw",
    email: str = "alice@mail.test",
    directions: list[Direction] | None = None,
    mailbox_id: str = "mbx1",
    test_id: str = "t1",
    sealed: SealedCredentials | str | None = "auto",
    allowed_ports: list[int] | None = None,
    credential_source: CredentialSource = CredentialSource.MAILBOX,
    smtp_mode: Literal["dry_run", "send"] = "dry_run",
    **target: Any,
) -> TestRequested:
    """A TestRequested whose credentials are sealed like mailbox-svc seals them."""
    placeholder = Endpoint(host="mail.test", port=993, tls=TlsMode.IMPLICIT)
    creds: SealedCredentials | None
    if sealed == "auto":
        creds = SealedCredentials(
            incoming=seal_for(test_id, "incoming", incoming or placeholder, user, password),
            outgoing=seal_for(test_id, "outgoing", outgoing or placeholder, user, password),
        )
    else:
        creds = sealed  # type: ignore[assignment]
    if directions is None:
        directions = [d for d, ep in ((Direction.INCOMING, incoming), (Direction.OUTGOING, outgoing)) if ep]
    return TestRequested(
        test_id=test_id,
        mailbox=MailboxRef(
            mailbox_id=mailbox_id, email=email, owner=OWNER, profile_id="prof1", profile_owner=PROFILE_OWNER
        ),
        target=ServerTarget(
            profile_id="prof1",
            profile_name="test profile",
            incoming_protocol=protocol,
            incoming=incoming or placeholder,
            outgoing=outgoing or placeholder,
            **target,
        ),
        credential_source=credential_source,
        smtp_mode=smtp_mode,
        credentials=creds,
        directions=directions,
        allowed_ports=allowed_ports if allowed_ports is not None else list(range(1024, 65536)),
        requested_at=datetime.now(UTC),
    )


StartFake = Callable[..., Awaitable["FakeServer"]]

# --- hostile servers --------------------------------------------------------------------------
Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "FakeServer"], Awaitable[None]]


@dataclass
class FakeServer:
    """A loopback server playing one behaviour; records connections and every byte it received."""

    behaviour: Behaviour
    port: int = 0
    connections: int = 0
    received: bytearray = field(default_factory=bytearray)
    server: asyncio.Server | None = None
    active: int = 0
    peak: int = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await self.behaviour(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            self.active -= 1
            writer.close()

    async def read_line(self, reader: asyncio.StreamReader) -> bytes:
        line = await reader.readline()
        self.received.extend(line)
        if not line:
            raise ConnectionResetError
        return line

    async def drain_forever(self, reader: asyncio.StreamReader) -> None:
        while data := await reader.read(4096):
            self.received.extend(data)


@pytest.fixture
async def fake_server() -> AsyncIterator[StartFake]:
    started: list[FakeServer] = []

    async def start(behaviour: Behaviour, tls: ssl.SSLContext | None = None) -> FakeServer:
        fake = FakeServer(behaviour)
        fake.server = await asyncio.start_server(fake._serve, "127.0.0.1", 0, ssl=tls)
        fake.port = fake.server.sockets[0].getsockname()[1]
        started.append(fake)
        return fake

    yield start
    for fake in started:
        assert fake.server is not None
        fake.server.close()
        if hasattr(fake.server, "close_clients"):
            fake.server.close_clients()
