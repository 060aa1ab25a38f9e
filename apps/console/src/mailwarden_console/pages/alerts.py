"""The alerts wall of one recipient (or every wall), live: raised, updated, resolved; mark read, delete all."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from mailwarden_console.client import Refused
from mailwarden_console.web import Ctx, Signed, back, text

router = APIRouter()

QUERY = ("recipient_kind", "recipient_id", "level", "unread", "state", "mailbox_id")


def lifecycle(alert: dict[str, Any]) -> str:
    """raised (new), updated (seen again since: its count grew) or resolved."""
    if alert.get("state") == "resolved":
        return "resolved"
    return "updated" if int(alert.get("count", 1)) > 1 else "raised"


def _wall_url(query: dict[str, str]) -> str:
    kept = {k: v for k, v in query.items() if k in QUERY and v}
    return "/alerts" + (f"?{urlencode(kept)}" if kept else "")


async def _wall(ctx: Ctx, template: str) -> Response:
    query = {k: ctx.request.query_params.get(k, "") for k in QUERY}
    cursor = ctx.request.query_params.get("cursor", "")
    page, refused = await ctx.try_call(
        "alert-svc alerts.list", params={**query, "cursor": cursor, "limit": 50}
    )
    items = [{**a, "lifecycle": lifecycle(a)} for a in (page or {}).get("items", [])]
    recipient = f"{query['recipient_kind']}:{query['recipient_id']}" if query["recipient_id"] else ""
    return ctx.render(
        template,
        query=query,
        items=items,
        next_cursor=(page or {}).get("next_cursor"),
        cursor=cursor,
        refused=refused,
        recipient=recipient,
        live_key=f"alert:{recipient}" if recipient else "alert:*",
        wall_url=_wall_url(query),
    )


@router.get("/alerts", response_class=HTMLResponse)
async def wall(ctx: Signed) -> Response:
    return await _wall(ctx, "alerts.html")


@router.get("/alerts/items", response_class=HTMLResponse)
async def wall_items(ctx: Signed) -> Response:
    """The wall's list alone, re-read when an alert for this recipient arrives."""
    return await _wall(ctx, "alert_items.html")


@router.post("/alerts/{alert_id}/read")
async def mark_read(ctx: Signed, alert_id: str) -> Response:
    form = await ctx.form()
    back_to = text(form, "back") if text(form, "back").startswith("/alerts") else "/alerts"
    read = text(form, "read") != "false"
    try:
        await ctx.call("alert-svc alerts.mark_read", path={"alert_id": alert_id}, body={"read": read})
    except Refused as exc:
        return back(back_to, exc.message)
    return back(back_to, "Marked read." if read else "Marked unread.")


@router.post("/alerts/delete-all")
async def delete_all(ctx: Signed) -> Response:
    form = await ctx.form()
    kind, rid = text(form, "recipient_kind"), text(form, "recipient_id")
    back_to = _wall_url({"recipient_kind": kind, "recipient_id": rid})
    try:
        result = await ctx.call(
            "alert-svc alerts.delete_all", params={"recipient_kind": kind, "recipient_id": rid}
        )
    except Refused as exc:
        return back(back_to, exc.message)
    return back(back_to, f"Deleted {result['deleted']} alert{'s' if result['deleted'] != 1 else ''}.")
