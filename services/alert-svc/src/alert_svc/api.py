"""HTTP routes and the same operations over NATS request-reply (``mailwarden.rpc.alert-svc.<op>``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from alert_svc.config import Settings
from alert_svc.operations import Operations
from alert_svc.schemas import (
    AlertId,
    AlertPage,
    AlertQuery,
    AlertRef,
    AlertView,
    Deleted,
    DeliveryListRequest,
    DeliveryQuery,
    DeliveryView,
    Empty,
    MarkRead,
    MarkReadRequest,
    Preferences,
    PreferencesRequest,
    RecipientRef,
    WebhookCreate,
    WebhookCreated,
    WebhookId,
    WebhookRef,
    WebhookView,
)
from contracts.models import Identifier, OwnerKind
from mailwarden_runtime.service import ServiceRuntime

AlertPath = Annotated[AlertId, Path()]
WebhookPath = Annotated[WebhookId, Path()]


def build_router(ops: Operations, settings: Settings) -> APIRouter:
    router = APIRouter()

    @router.get("/alerts", tags=["alerts"], summary="One wall (or all): filter, newest first, paginated")
    async def list_alerts(q: Annotated[AlertQuery, Query()]) -> AlertPage:
        return await ops.list_alerts(q)

    @router.delete("/alerts", tags=["alerts"], summary="Delete all alerts of one recipient")
    async def delete_all(q: Annotated[RecipientRef, Query()]) -> Deleted:
        return await ops.delete_all(q)

    @router.get("/alerts/{alert_id}", tags=["alerts"])
    async def get_alert(alert_id: AlertPath) -> AlertView:
        return await ops.get_alert(alert_id)

    @router.patch("/alerts/{alert_id}", tags=["alerts"], summary="Mark read or unread")
    async def patch_alert(alert_id: AlertPath, body: MarkRead) -> AlertView:
        return await ops.mark_read(alert_id, body.read)

    @router.delete("/alerts/{alert_id}", tags=["alerts"], status_code=204)
    async def delete_alert(alert_id: AlertPath) -> Response:
        await ops.delete_alert(alert_id)
        return Response(status_code=204)

    @router.post("/webhooks", tags=["webhooks"], status_code=201, summary="Register a URL for alerts")
    async def create_webhook(body: WebhookCreate) -> WebhookCreated:
        return await ops.create_webhook(body)

    @router.get("/webhooks", tags=["webhooks"])
    async def list_webhooks() -> list[WebhookView]:
        return await ops.list_webhooks()

    @router.get("/webhooks/{webhook_id}", tags=["webhooks"])
    async def get_webhook(webhook_id: WebhookPath) -> WebhookView:
        return await ops.get_webhook(webhook_id)

    @router.delete("/webhooks/{webhook_id}", tags=["webhooks"], status_code=204)
    async def delete_webhook(webhook_id: WebhookPath) -> Response:
        await ops.delete_webhook(webhook_id)
        return Response(status_code=204)

    @router.get(
        "/webhooks/{webhook_id}/deliveries", tags=["webhooks"], summary="Deliveries, failures included"
    )
    async def deliveries(webhook_id: WebhookPath, q: Annotated[DeliveryQuery, Query()]) -> list[DeliveryView]:
        return await ops.deliveries(webhook_id, q)

    @router.get("/recipients/{recipient_kind}/{recipient_id}/preferences", tags=["preferences"])
    async def get_preferences(
        recipient_kind: OwnerKind, recipient_id: Annotated[Identifier, Path()]
    ) -> Preferences:
        ref = RecipientRef(recipient_kind=recipient_kind, recipient_id=recipient_id)
        return await ops.get_preferences(ref, list(settings.alert_email_levels))

    @router.put("/recipients/{recipient_kind}/{recipient_id}/preferences", tags=["preferences"])
    async def put_preferences(
        recipient_kind: OwnerKind, recipient_id: Annotated[Identifier, Path()], body: Preferences
    ) -> Preferences:
        ref = RecipientRef(recipient_kind=recipient_kind, recipient_id=recipient_id)
        return await ops.set_preferences(ref, body)

    return router


def register_rpc(runtime: ServiceRuntime, ops: Operations, settings: Settings) -> None:
    """The same operations for systems that speak only NATS."""

    async def mark_read(r: MarkReadRequest) -> AlertView:
        return await ops.mark_read(r.alert_id, r.read)

    async def get_alert(r: AlertRef) -> AlertView:
        return await ops.get_alert(r.alert_id)

    async def delete_alert(r: AlertRef) -> Deleted:
        return await ops.delete_alert(r.alert_id)

    async def list_webhooks(_: Empty) -> dict[str, Any]:
        return {"items": [w.model_dump(mode="json") for w in await ops.list_webhooks()]}

    async def delete_webhook(r: WebhookRef) -> Deleted:
        return await ops.delete_webhook(r.webhook_id)

    async def deliveries(r: DeliveryListRequest) -> dict[str, Any]:
        return {"items": [d.model_dump(mode="json") for d in await ops.deliveries(r.webhook_id, r)]}

    async def get_prefs(r: RecipientRef) -> Preferences:
        return await ops.get_preferences(r, list(settings.alert_email_levels))

    async def set_prefs(r: PreferencesRequest) -> Preferences:
        return await ops.set_preferences(r, r)

    runtime.rpc("alerts.list", AlertQuery, ops.list_alerts)
    runtime.rpc("alerts.get", AlertRef, get_alert)
    runtime.rpc("alerts.mark_read", MarkReadRequest, mark_read)
    runtime.rpc("alerts.delete", AlertRef, delete_alert)
    runtime.rpc("alerts.delete_all", RecipientRef, ops.delete_all)
    runtime.rpc("webhooks.create", WebhookCreate, ops.create_webhook)
    runtime.rpc("webhooks.list", Empty, list_webhooks)
    runtime.rpc("webhooks.delete", WebhookRef, delete_webhook)
    runtime.rpc("webhooks.deliveries", DeliveryListRequest, deliveries)
    runtime.rpc("preferences.get", RecipientRef, get_prefs)
    runtime.rpc("preferences.set", PreferencesRequest, set_prefs)
