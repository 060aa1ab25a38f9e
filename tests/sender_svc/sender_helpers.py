"""Helpers for the sender-svc tests (importable: conftest puts this folder on sys.path).

These tests run no mailbox-svc: a :class:`~mailwarden_mailnet.login_desk.LoginDesk` answers its
``login`` operation on NATS the way mailbox-svc does (service token checked, the login sealed to
purpose ``send``, the mailbox, outgoing, the profile's host and port, for a short time). The real
operation is in tests/integration/test_send_e2e.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg

from contracts.envelope import make_envelope
from contracts.events import (
    AdvancedOptions,
    EmailSettingsChanged,
    Event,
    MailboxCreated,
    MailboxSnapshot,
    MailboxStatusChanged,
    ProfileCreated,
    ProfileSnapshot,
    SettingsSnapshot,
)
from contracts.models import (
    DeliveryMethod,
    Endpoint,
    IncomingProtocol,
    MailboxRef,
    Owner,
    OwnerKind,
    TestStatus,
    TlsMode,
)
from mailwarden_mailnet.login_desk import LoginDesk
from mailwarden_runtime.crypto import KeyRing
from mailwarden_servers import eventually as wait_for

TRANSIT = KeyRing.for_development("transit")
OWNER = Owner(kind=OwnerKind.USER, id="u1", name="Zoë Ünal", email="zoe@example.org")
PROFILE_OWNER = Owner(kind=OwnerKind.USER, id="p1", name="Paul", email="paul@example.org")
NAMES = {"mail.test": ["127.0.0.1"]}


@dataclass
class Recorder:
    """Every message seen on mailwarden.send.>, in arrival order."""

    messages: list[Msg] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, msg: Msg) -> None:
        self.messages.append(msg)
        self.arrived.set()

    def of(self, event_type: str, mailbox_id: str | None = None) -> list[dict[str, Any]]:
        out = []
        for msg in self.messages:
            body = json.loads(msg.data)
            if body.get("type") == event_type and (
                mailbox_id is None or msg.subject.endswith("." + mailbox_id)
            ):
                out.append(body)
        return out

    async def wait_for(
        self, event_type: str, count: int = 1, mailbox_id: str | None = None, timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.of(event_type, mailbox_id)) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.of(event_type, mailbox_id)


async def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """:func:`mailwarden_servers.eventually` where any exception means "not yet" (e.g. ``sendable``
    refusing until the read model has the mailbox)."""
    return await wait_for(check, "the condition", timeout, ignoring=(Exception,))


def enter_login(
    desk: LoginDesk,
    mailbox_id: str,
    *,
    host: str = "mail.test",
    port: int,
    tls: TlsMode = TlsMode.STARTTLS,
    user: str = "alice",
    password: str = "alice-pw",
    **_: Any,
) -> None:
    """What mailbox-svc would hand sender-svc for the mailbox (the arguments of :func:`setup_events`)."""
    desk.logins[mailbox_id] = (user, password)
    desk.endpoints[mailbox_id] = Endpoint(host=host, port=port, tls=tls)


def setup_events(
    mailbox_id: str,
    *,
    host: str = "mail.test",
    port: int,
    tls: TlsMode = TlsMode.STARTTLS,
    user: str = "alice",
    password: str = "alice-pw",
    email: str | None = None,
    approval: str = "approved",
    enabled_outgoing: bool = True,
    outgoing_delivery: DeliveryMethod = DeliveryMethod.SERVER_SIDE_SYNC,
    profile_id: str = "prof1",
    allow_plaintext_auth: bool = False,
    max_connections: int = 10,
    allowed_ports: list[int] | None = None,
) -> list[Event]:
    """What profile-svc and mailbox-svc publish for one approved, enabled mailbox and its profile."""
    at = datetime.now(UTC)
    email = email or f"{mailbox_id}@mail.test"
    outgoing = Endpoint(host=host, port=port, tls=tls)
    incoming = Endpoint(host=host, port=993, tls=TlsMode.IMPLICIT)
    profile = ProfileSnapshot(
        profile_id=profile_id,
        name="test profile",
        owner=PROFILE_OWNER,
        incoming_protocol=IncomingProtocol.IMAP,
        incoming=incoming,
        outgoing=outgoing,
        advanced=AdvancedOptions(
            allow_plaintext_auth=allow_plaintext_auth,
            connect_timeout_s=5,
            max_concurrent_connections=max_connections,
        ),
        updated_at=at,
    )
    mailbox = MailboxSnapshot(
        mailbox_id=mailbox_id,
        email=email,
        owner=OWNER,
        profile_id=profile_id,
        outgoing_delivery=outgoing_delivery,
        approval=approval,  # type: ignore[arg-type]
        has_password=True,
        updated_at=at,
    )
    ref = MailboxRef(
        mailbox_id=mailbox_id, email=email, owner=OWNER, profile_id=profile_id, profile_owner=PROFILE_OWNER
    )
    status = MailboxStatusChanged(
        mailbox=ref,
        incoming_status=TestStatus.SUCCESS,
        outgoing_status=TestStatus.SUCCESS if enabled_outgoing else TestStatus.FAILURE,
        enabled_incoming=True,
        enabled_outgoing=enabled_outgoing,
    )
    settings = SettingsSnapshot(version=1, updated_at=at, allowed_ports=allowed_ports or [port])
    return [
        EmailSettingsChanged(settings=settings),
        ProfileCreated(profile=profile),
        MailboxCreated(mailbox=mailbox),
        MailboxStatusChanged.model_validate(status.model_dump()),
    ]


def envelope_of(event: Event) -> Any:
    return make_envelope(event, "test")


def mail(mailbox_id: str, key: str, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "mailbox_id": mailbox_id,
        "idempotency_key": key,
        "to": [{"name": "Ann Example", "address": "ann@example.org"}],
        "subject": "Hello",
        "text": "Hello Ann",
    }
    body.update(over)
    return body
