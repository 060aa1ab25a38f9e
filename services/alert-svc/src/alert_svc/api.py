"""alert-svc's operations, each declared once and served on HTTP and NATS request-reply."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from alert_svc.config import Settings
from alert_svc.operations import Operations
from alert_svc.schemas import (
    AlertPage,
    AlertQuery,
    AlertRef,
    AlertView,
    Deleted,
    DeliveryList,
    DeliveryListRequest,
    Empty,
    MarkReadRequest,
    Preferences,
    PreferencesRequest,
    RecipientRef,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookRef,
    WebhookView,
)
from mailwarden_runtime.operations import Bound, Operation, serve
from mailwarden_runtime.service import ServiceRuntime

NO_ALERT = {404: "No such alert"}
NO_WEBHOOK = {404: "No such webhook"}

ALERTS_LIST = Operation(
    name="alerts.list",
    method="GET",
    path="/alerts",
    input=AlertQuery,
    output=AlertPage,
    permission="alerts:read",
    owner_scoped=True,
    summary="One wall (or all): filter, newest first, paginated",
    errors={422: "Invalid input, a recipient kind without id (or the reverse), or a foreign cursor"},
    tags=("alerts",),
)
ALERTS_DELETE_ALL = Operation(
    name="alerts.delete_all",
    method="DELETE",
    path="/alerts",
    input=RecipientRef,
    output=Deleted,
    permission="alerts:write",
    owner_scoped=True,
    summary="Delete all alerts of one recipient",
    tags=("alerts",),
)
ALERTS_GET = Operation(
    name="alerts.get",
    method="GET",
    path="/alerts/{alert_id}",
    input=AlertRef,
    output=AlertView,
    permission="alerts:read",
    owner_scoped=True,
    summary="Read an alert",
    errors=NO_ALERT,
    tags=("alerts",),
)
ALERTS_MARK_READ = Operation(
    name="alerts.mark_read",
    method="PATCH",
    path="/alerts/{alert_id}",
    input=MarkReadRequest,
    output=AlertView,
    permission="alerts:write",
    owner_scoped=True,
    summary="Mark read or unread",
    errors=NO_ALERT,
    tags=("alerts",),
)
ALERTS_DELETE = Operation(
    name="alerts.delete",
    method="DELETE",
    path="/alerts/{alert_id}",
    input=AlertRef,
    output=Deleted,
    permission="alerts:write",
    owner_scoped=True,
    summary="Delete an alert",
    errors=NO_ALERT,
    status_code=204,
    tags=("alerts",),
)
WEBHOOKS_CREATE = Operation(
    name="webhooks.create",
    method="POST",
    path="/webhooks",
    input=WebhookCreate,
    output=WebhookCreated,
    permission="channels:write",
    summary="Register a URL for alerts",
    docs="The signing secret is returned once, in this answer.",
    status_code=201,
    tags=("webhooks",),
)
WEBHOOKS_LIST = Operation(
    name="webhooks.list",
    method="GET",
    path="/webhooks",
    input=Empty,
    output=WebhookList,
    permission="channels:read",
    summary="Every registered webhook (HTTP: a bare list)",
    tags=("webhooks",),
    http_items=True,
)
WEBHOOKS_GET = Operation(
    name="webhooks.get",
    method="GET",
    path="/webhooks/{webhook_id}",
    input=WebhookRef,
    output=WebhookView,
    permission="channels:read",
    summary="Read a webhook (never its secret)",
    errors=NO_WEBHOOK,
    tags=("webhooks",),
)
WEBHOOKS_DELETE = Operation(
    name="webhooks.delete",
    method="DELETE",
    path="/webhooks/{webhook_id}",
    input=WebhookRef,
    output=Deleted,
    permission="channels:write",
    summary="Delete a webhook",
    errors=NO_WEBHOOK,
    status_code=204,
    tags=("webhooks",),
)
WEBHOOKS_DELIVERIES = Operation(
    name="webhooks.deliveries",
    method="GET",
    path="/webhooks/{webhook_id}/deliveries",
    input=DeliveryListRequest,
    output=DeliveryList,
    permission="channels:read",
    summary="Deliveries, failures included (HTTP: a bare list)",
    errors=NO_WEBHOOK,
    tags=("webhooks",),
    http_items=True,
)
PREFERENCES_GET = Operation(
    name="preferences.get",
    method="GET",
    path="/recipients/{recipient_kind}/{recipient_id}/preferences",
    input=RecipientRef,
    output=Preferences,
    permission="channels:read",
    summary="Which alert levels are mailed to a recipient, and where",
    tags=("preferences",),
)
PREFERENCES_SET = Operation(
    name="preferences.set",
    method="PUT",
    path="/recipients/{recipient_kind}/{recipient_id}/preferences",
    input=PreferencesRequest,
    output=Preferences,
    permission="channels:write",
    summary="Set which alert levels are mailed to a recipient, and where",
    tags=("preferences",),
)

OPERATIONS: tuple[Operation[Any, Any], ...] = (
    ALERTS_LIST,
    ALERTS_DELETE_ALL,
    ALERTS_GET,
    ALERTS_MARK_READ,
    ALERTS_DELETE,
    WEBHOOKS_CREATE,
    WEBHOOKS_LIST,
    WEBHOOKS_GET,
    WEBHOOKS_DELETE,
    WEBHOOKS_DELIVERIES,
    PREFERENCES_GET,
    PREFERENCES_SET,
)


def bind(ops: Operations, settings: Settings) -> list[Bound[Any, Any]]:
    async def get_alert(r: AlertRef) -> AlertView:
        return await ops.get_alert(r.alert_id)

    async def mark_read(r: MarkReadRequest) -> AlertView:
        return await ops.mark_read(r.alert_id, r.read)

    async def delete_alert(r: AlertRef) -> Deleted:
        return await ops.delete_alert(r.alert_id)

    async def list_webhooks(_: Empty) -> WebhookList:
        return WebhookList(items=await ops.list_webhooks())

    async def get_webhook(r: WebhookRef) -> WebhookView:
        return await ops.get_webhook(r.webhook_id)

    async def delete_webhook(r: WebhookRef) -> Deleted:
        return await ops.delete_webhook(r.webhook_id)

    async def deliveries(r: DeliveryListRequest) -> DeliveryList:
        return DeliveryList(items=await ops.deliveries(r.webhook_id, r))

    async def get_prefs(r: RecipientRef) -> Preferences:
        return await ops.get_preferences(r, list(settings.alert_email_levels))

    async def set_prefs(r: PreferencesRequest) -> Preferences:
        return await ops.set_preferences(r, r)

    return [
        ALERTS_LIST.bind(ops.list_alerts),
        ALERTS_DELETE_ALL.bind(ops.delete_all),
        ALERTS_GET.bind(get_alert),
        ALERTS_MARK_READ.bind(mark_read),
        ALERTS_DELETE.bind(delete_alert),
        WEBHOOKS_CREATE.bind(ops.create_webhook),
        WEBHOOKS_LIST.bind(list_webhooks),
        WEBHOOKS_GET.bind(get_webhook),
        WEBHOOKS_DELETE.bind(delete_webhook),
        WEBHOOKS_DELIVERIES.bind(deliveries),
        PREFERENCES_GET.bind(get_prefs),
        PREFERENCES_SET.bind(set_prefs),
    ]


def serve_operations(runtime: ServiceRuntime, ops: Operations, settings: Settings) -> APIRouter:
    """``mailwarden.rpc.alert-svc.<op>`` registered on ``runtime``; the HTTP routes returned."""
    return serve(runtime, bind(ops, settings))
