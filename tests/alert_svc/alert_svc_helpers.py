"""Helpers shared by the alert-svc tests (importable: conftest puts this folder on sys.path).

The app runs in-process on a private NATS and its own database.

Tests play mailbox-svc and profile-svc through the bus: they publish MailboxStatusChanged,
EmailSettingsChanged, ProfileCreated and MailboxCreated envelopes, then read the wall over HTTP,
the per-recipient alert subjects over NATS, mail from the SMTP fixture and webhooks from a local
HTTP server.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from nats.aio.client import Client
from nats.aio.msg import Msg

from contracts.envelope import make_envelope
from contracts.events import (
    AdvancedOptions,
    EmailSettingsChanged,
    Event,
    MailboxCreated,
    MailboxSnapshot,
    ProfileCreated,
    ProfileSnapshot,
    SettingsSnapshot,
)
from contracts.models import (
    Endpoint,
    IncomingProtocol,
    MailboxRef,
    Owner,
    OwnerKind,
    TlsMode,
)
from mailwarden_runtime.auth import bearer_header
from mailwarden_servers import eventually

PROFILE_OWNER = Owner(kind=OwnerKind.USER, id="admin1", name="Ada Admin", email="admin@example.com")


def user(n: str, email: bool = True) -> Owner:
    return Owner(kind=OwnerKind.USER, id=n, name=f"User {n}", email=f"{n}@example.com" if email else None)


def mailbox_ref(
    mailbox: str, owner: Owner, profile: str = "prf1", profile_owner: Owner = PROFILE_OWNER
) -> MailboxRef:
    return MailboxRef(
        mailbox_id=mailbox,
        email=f"{mailbox}@example.com",
        owner=owner,
        profile_id=profile,
        profile_owner=profile_owner,
    )


def settings_event(version: int, levels: list[str], notify: bool = True) -> EmailSettingsChanged:
    return EmailSettingsChanged(
        settings=SettingsSnapshot(alert_levels=levels, notify_mailbox_owner=notify, version=version)
    )


def profile_event(profile: str, majority_email: bool, owner: Owner = PROFILE_OWNER) -> ProfileCreated:
    endpoint = Endpoint(host="mail.example.com", port=993, tls=TlsMode.IMPLICIT)
    return ProfileCreated(
        profile=ProfileSnapshot(
            profile_id=profile,
            name=f"Profile {profile}",
            owner=owner,
            incoming_protocol=IncomingProtocol.IMAP,
            incoming=endpoint,
            outgoing=Endpoint(host="mail.example.com", port=465, tls=TlsMode.IMPLICIT),
            advanced=AdvancedOptions(email_alert_on_majority_failure=majority_email),
            updated_at=datetime.now(UTC),
        )
    )


def mailbox_event(mailbox: str, owner: Owner, profile: str) -> MailboxCreated:
    return MailboxCreated(
        mailbox=MailboxSnapshot(
            mailbox_id=mailbox,
            email=f"{mailbox}@example.com",
            owner=owner,
            profile_id=profile,
            updated_at=datetime.now(UTC),
        )
    )


@dataclass
class Harness:
    """A running alert-svc with an HTTP client, a NATS client and its database."""

    http: httpx.AsyncClient
    nc: Client
    db: Any
    alerts_seen: list[dict[str, Any]] = field(default_factory=list)
    subjects_seen: list[str] = field(default_factory=list)
    token: str = ""

    async def request(self, subject: str, payload: bytes, timeout: float) -> Msg:
        """NATS request-reply with the harness's API token, as every caller must."""
        return await self.nc.request(subject, payload, timeout=timeout, headers=bearer_header(self.token))

    async def publish(
        self, data: Event, event_id: uuid.UUID | None = None, at: datetime | None = None
    ) -> uuid.UUID:
        env = make_envelope(data, "test", event_id=event_id, occurred_at=at)
        await self.nc.jetstream().publish(data.SUBJECT, env.to_bytes(), headers={"Nats-Msg-Id": str(env.id)})
        return env.id

    async def settled(self, durable: str = "alert-svc-status", stream: str = "MW_CONFIG") -> None:
        """Wait until the consumer has acked everything published so far (handlers may run out of order)."""

        async def check() -> bool:
            info = await self.nc.jetstream().consumer_info(stream, durable)
            return info.num_pending == 0 and info.num_ack_pending == 0

        await eventually(check, what=f"{durable} to drain")

    async def wall(self, owner: Owner, **params: Any) -> list[dict[str, Any]]:
        query = {"recipient_kind": owner.kind.value, "recipient_id": owner.id, **params}
        response = await self.http.get("/alerts", params=query)
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def wait_wall(
        self,
        owner: Owner,
        n: int,
        *,
        kind_filter: str | None = None,
        affected: int | None = None,
        count_at_least: int | None = None,
        **params: Any,
    ) -> list[dict[str, Any]]:
        """Wait until the wall (filtered over HTTP by ``params``, then locally) holds ``n`` alerts."""

        def keep(a: dict[str, Any]) -> bool:
            return (
                (kind_filter is None or a["kind"] == kind_filter)
                and (affected is None or len(a["affected_mailboxes"]) >= affected)
                and (count_at_least is None or a["count"] >= count_at_least)
            )

        async def check() -> list[dict[str, Any]] | None:
            items = [a for a in await self.wall(owner, **params) if keep(a)]
            return items if len(items) >= n else None

        items: list[dict[str, Any]] = await eventually(check, what=f"{n} alerts for {owner.id} {params}")
        assert len(items) == n, items
        return items


def later(minutes: float) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=minutes)
