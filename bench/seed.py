"""What the benches that run one service alone (sync-svc, sender-svc) publish instead of the others:
the events that make a mailbox tested and enabled, as profile-svc and mailbox-svc publish them."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from nats.js import JetStreamContext

from contracts import events
from contracts.envelope import make_envelope
from contracts.events import Event
from contracts.models import (
    Direction,
    Endpoint,
    IncomingProtocol,
    MailboxRef,
    Owner,
    TestStatus,
)
from mailbox_svc.testing import target_of
from mailwarden_runtime.crypto import KeyRing


def org_events(
    profile_id: str,
    owner: Owner,
    incoming: Endpoint,
    outgoing: Endpoint,
    ports: list[int],
    at: datetime,
    **advanced: Any,
) -> list[Event]:
    """The organisation's settings (only ``ports`` allowed) and one IMAP profile."""
    profile = events.ProfileSnapshot(
        profile_id=profile_id,
        name=profile_id,
        owner=owner,
        incoming_protocol=IncomingProtocol.IMAP,
        incoming=incoming,
        outgoing=outgoing,
        advanced=events.AdvancedOptions(**advanced),
        updated_at=at,
    )
    return [
        events.EmailSettingsChanged(
            settings=events.SettingsSnapshot(version=1, updated_at=at, allowed_ports=ports)
        ),
        events.ProfileCreated(profile=profile),
    ]


def enabled_mailbox(
    profile: events.ProfileCreated,
    mailbox_id: str,
    email: str,
    login: tuple[str, str],
    direction: Direction,
    transit: KeyRing,
    at: datetime,
) -> list[Event]:
    """An approved mailbox of ``profile`` whose test of ``direction`` passed (its login sealed for it)."""
    p = profile.profile
    owner = p.owner
    user, password = login
    ref = MailboxRef(
        mailbox_id=mailbox_id, email=email, owner=owner, profile_id=p.profile_id, profile_owner=owner
    )
    sealed = transit.seal(
        json.dumps({"username": user, "password": password}).encode(),
        f"mailbox:{mailbox_id}:{direction.value}",
    )
    incoming = direction is Direction.INCOMING
    return [
        events.MailboxCreated(
            mailbox=events.MailboxSnapshot(
                mailbox_id=mailbox_id,
                email=email,
                owner=owner,
                profile_id=p.profile_id,
                approval="approved",
                has_password=True,
                updated_at=at,
            )
        ),
        events.TestRequested(
            test_id=f"t-{mailbox_id}",
            mailbox=ref,
            target=target_of(p),
            credentials=events.SealedCredentials(**{direction.value: sealed}),
            requested_at=at,
        ),
        events.MailboxStatusChanged(
            mailbox=ref,
            incoming_status=TestStatus.SUCCESS if incoming else TestStatus.NOT_APPLICABLE,
            outgoing_status=TestStatus.NOT_APPLICABLE if incoming else TestStatus.SUCCESS,
            enabled_incoming=incoming,
            enabled_outgoing=not incoming,
        ),
    ]


async def publish(js: JetStreamContext, events: Iterable[Event]) -> None:
    """Publish as their owners do: in order, in an envelope, with its id as ``Nats-Msg-Id``."""
    for event in events:
        env = make_envelope(event, "bench")
        await js.publish(event.SUBJECT, env.to_bytes(), headers={"Nats-Msg-Id": str(env.id)})
