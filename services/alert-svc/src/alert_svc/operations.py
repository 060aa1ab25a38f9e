"""The wall, webhook and preference operations, shared by the HTTP API and NATS request-reply.

Every change is published with its actor (WebhookRegistered, WebhookRemoved, AlertPreferencesChanged,
AlertMarkedRead, AlertsDeleted), written by the same update as the change (the outbox), and the
stored document keeps who made it: the audit lists them like every other change.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from alert_svc.access import admit_wall, own_wall
from alert_svc.channels.webhook import admit_url, secret_aad
from alert_svc.schemas import (
    AlertPage,
    AlertQuery,
    AlertView,
    Deleted,
    DeliveryQuery,
    DeliveryView,
    Preferences,
    RecipientRef,
    WebhookCreate,
    WebhookCreated,
    WebhookView,
)
from alert_svc.store import Stores
from alert_svc.store.alerts import AlertDoc
from alert_svc.store.recipients import PreferencesDoc
from alert_svc.store.wall import WallFilter
from alert_svc.store.webhooks import WebhookDoc
from contracts.alerting import (
    AlertMarkedRead,
    AlertPreferencesChanged,
    AlertsDeleted,
    WebhookRegistered,
    WebhookRemoved,
)
from contracts.envelope import Envelope
from contracts.events import Event
from mailwarden_mailnet.http_egress import HttpEgress
from mailwarden_runtime.auth import Permission
from mailwarden_runtime.auth.context import current_actor
from mailwarden_runtime.crypto import KeyRing
from mailwarden_runtime.http import DomainError
from mailwarden_runtime.outbox import OutboxEntry, outbox_entry

Hook = TypeVar("Hook", bound=WebhookView)


def _encode_cursor(doc: AlertDoc) -> str:
    ms = int(doc.first_seen.timestamp() * 1000)
    return base64.urlsafe_b64encode(json.dumps([ms, doc.id]).encode()).decode()


def _decode_cursor(text: str) -> tuple[datetime, str]:
    try:
        ms, alert_id = json.loads(base64.urlsafe_b64decode(text.encode()))
        return datetime.fromtimestamp(int(ms) / 1000, UTC), str(alert_id)
    except (ValueError, TypeError):
        raise DomainError(422, "not a cursor from this API", field="cursor") from None


def wall_of(kind: str | None, rid: str | None) -> str | None:
    """The recipient key of the wall asked for (None: every wall)."""
    if (kind is None) != (rid is None):
        raise DomainError(422, "recipient_kind and recipient_id go together", field="recipient_id")
    return f"{kind}:{rid}" if kind else None


def _alert_view(doc: AlertDoc) -> AlertView:
    return AlertView.model_validate(doc.model_dump())


def _shown(hook: WebhookDoc, shown: type[Hook], /, **own: object) -> Hook:
    """A webhook as the API shows it (``shown``, with ``own``, its own fields): never the sealed secret."""
    return shown.model_validate(hook.model_dump(exclude={"secret"}) | own)


def _host(url: str) -> str:
    """What a WebhookRegistered names of the URL: host and port, never the path or query."""
    parts = urlsplit(url)
    return parts.netloc.rpartition("@")[2] or url[:300]


def _recipient(key: str) -> tuple[str | None, str | None]:
    kind, _, rid = key.partition(":")
    return (kind, rid) if rid else (None, None)


class Operations:
    def __init__(
        self,
        stores: Stores,
        keys: KeyRing,
        egress: HttpEgress,
        envelope: Callable[[Event], Envelope[Any]],
        wake_relay: Callable[[], None],
    ) -> None:
        self.egress = egress
        self.wall = stores.wall
        self.webhooks = stores.webhooks
        self.preferences = stores.preferences
        self.keys = keys
        self.envelope = envelope
        """An event of this service naming the caller as its actor (``ServiceRuntime.envelope``)."""
        self.wake_relay = wake_relay

    def _events(self, event: Event) -> list[OutboxEntry]:
        """The outbox entry of ``event``, written by the change's own update."""
        return [outbox_entry(self.envelope(event))]

    # --- the wall ----------------------------------------------------------------------------
    async def list_alerts(self, q: AlertQuery) -> AlertPage:
        wall = wall_of(q.recipient_kind, q.recipient_id)
        own = own_wall("alerts:read")
        if own is not None:  # a mailbox owner sees their own wall only (asked for, or by default)
            admit_wall("alerts:read", wall or own)
            wall = own
        which = WallFilter(
            recipient_key=wall,
            level=q.level,
            state=q.state,
            mailbox_id=q.mailbox_id,
            profile_id=q.profile_id,
            read=None if q.unread is None else not q.unread,
            after=_decode_cursor(q.cursor) if q.cursor else None,
        )
        docs = await self.wall.find_alerts(which, q.limit + 1)
        more = len(docs) > q.limit
        docs = docs[: q.limit]
        return AlertPage(
            items=[_alert_view(d) for d in docs],
            next_cursor=_encode_cursor(docs[-1]) if more and docs else None,
        )

    async def get_alert(self, alert_id: str, permission: Permission = "alerts:read") -> AlertView:
        doc = await self.wall.get_alert(alert_id)
        if doc is None:
            raise DomainError(404, "no such alert", "alert_id")
        admit_wall(permission, doc.recipient_key)
        return _alert_view(doc)

    async def mark_read(self, alert_id: str, read: bool) -> AlertView:
        current = await self.get_alert(alert_id, "alerts:write")  # 404, or another's wall: 403
        event = AlertMarkedRead(
            alert_id=alert_id,
            recipient_kind=current.recipient.kind,
            recipient_id=current.recipient.id,
            read=read,
        )
        doc = await self.wall.mark_read(alert_id, read, current_actor() or "", self._events(event))
        if doc is None:
            raise DomainError(404, "no such alert", "alert_id")
        self.wake_relay()
        return _alert_view(doc)

    async def delete_alert(self, alert_id: str) -> Deleted:
        current = await self.get_alert(alert_id, "alerts:write")
        event = AlertsDeleted(
            alert_id=alert_id, recipient_kind=current.recipient.kind, recipient_id=current.recipient.id
        )
        deleted = await self.wall.delete_alerts(
            WallFilter(alert_id=alert_id), current_actor() or "", self._events(event)
        )
        if not deleted:
            raise DomainError(404, "no such alert", "alert_id")
        self.wake_relay()
        return Deleted(deleted=deleted)

    async def delete_all(self, ref: RecipientRef) -> Deleted:
        """Dynamics' "Delete all alerts", for one recipient's wall."""
        wall = wall_of(ref.recipient_kind, ref.recipient_id)
        admit_wall("alerts:write", wall)
        kind, rid = _recipient(wall or "")
        event = AlertsDeleted.model_validate({"recipient_kind": kind, "recipient_id": rid})
        deleted = await self.wall.delete_alerts(
            WallFilter(recipient_key=wall), current_actor() or "", self._events(event)
        )
        if deleted:
            self.wake_relay()
        return Deleted(deleted=deleted)

    # --- webhooks ----------------------------------------------------------------------------
    async def create_webhook(self, req: WebhookCreate) -> WebhookCreated:
        wall_of(req.recipient_kind, req.recipient_id)  # both or neither
        await admit_url(self.egress, str(req.url))
        webhook_id = f"wh_{uuid.uuid4().hex}"
        secret = req.secret or secrets.token_urlsafe(32)
        scope = f"{req.recipient_kind}:{req.recipient_id}" if req.recipient_kind else "*"
        hook = WebhookDoc(
            id=webhook_id,
            url=str(req.url),
            recipient_kind=req.recipient_kind,
            recipient_id=req.recipient_id,
            scope_key=scope,
            levels=list(dict.fromkeys(req.levels)),
            secret=self.keys.seal(secret.encode(), secret_aad(webhook_id)),
            created_at=datetime.now(UTC),
            created_by=current_actor() or "",
        )
        event = WebhookRegistered(
            webhook_id=webhook_id,
            host=_host(hook.url),
            recipient_kind=req.recipient_kind,
            recipient_id=req.recipient_id,
            levels=hook.levels,
        )
        await self.webhooks.create_webhook(hook, self._events(event))
        self.wake_relay()
        return _shown(hook, WebhookCreated, secret=secret)

    async def list_webhooks(self) -> list[WebhookView]:
        return [_shown(d, WebhookView) for d in await self.webhooks.list_webhooks()]

    async def get_webhook(self, webhook_id: str) -> WebhookView:
        doc = await self.webhooks.get_webhook(webhook_id)
        if doc is None:
            raise DomainError(404, "no such webhook", "webhook_id")
        return _shown(doc, WebhookView)

    async def delete_webhook(self, webhook_id: str) -> Deleted:
        events = self._events(WebhookRemoved(webhook_id=webhook_id))
        if not await self.webhooks.delete_webhook(webhook_id, current_actor() or "", events):
            raise DomainError(404, "no such webhook", "webhook_id")
        self.wake_relay()
        return Deleted(deleted=1)

    async def deliveries(self, webhook_id: str, q: DeliveryQuery) -> list[DeliveryView]:
        await self.get_webhook(webhook_id)
        docs = await self.webhooks.list_deliveries(webhook_id, q.state, q.limit)
        return [DeliveryView.model_validate(d.model_dump()) for d in docs]

    # --- notification preferences --------------------------------------------------------------
    async def get_preferences(self, ref: RecipientRef, default_levels: list[str]) -> Preferences:
        admit_wall("alerts:read", f"{ref.recipient_kind}:{ref.recipient_id}")
        doc = await self.preferences.preferences(f"{ref.recipient_kind}:{ref.recipient_id}")
        levels = default_levels if doc is None or doc.email_levels is None else doc.email_levels
        return Preferences.model_validate({"email_levels": levels, "email": doc.email if doc else None})

    async def set_preferences(self, ref: RecipientRef, prefs: Preferences) -> Preferences:
        admit_wall("alerts:write", f"{ref.recipient_kind}:{ref.recipient_id}")
        wanted = PreferencesDoc(
            id=f"{ref.recipient_kind}:{ref.recipient_id}",
            email_levels=list(dict.fromkeys(prefs.email_levels)),
            email=prefs.email,
            updated_by=current_actor() or "",
        )
        event = AlertPreferencesChanged(
            recipient_kind=ref.recipient_kind,
            recipient_id=ref.recipient_id,
            email_levels=wanted.email_levels or [],
            email=wanted.email,
        )
        saved = await self.preferences.save_preferences(wanted, self._events(event))
        self.wake_relay()
        return Preferences.model_validate({"email_levels": saved.email_levels or [], "email": saved.email})
