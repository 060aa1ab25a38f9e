"""The organisation's email settings (PUT replaces them all, so the form always sends every field)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from mailwarden_console.client import Refused
from mailwarden_console.pages.mailboxes import DELIVERY, profile_names
from mailwarden_console.web import Ctx, Signed, back, text, texts

router = APIRouter()

LEVELS = [("error", "Errors"), ("warning", "Warnings"), ("information", "Information (successes)")]
PRESETS = [("default", "Default (993, 995, 465, 587, 143, 110, 25)"), ("government_cloud", "Government cloud"),
           ("custom", "Custom list")]  # fmt: skip
BOOLS = ("approved_users_only", "approved_queues_only", "notify_mailbox_owner")


async def _page(ctx: Ctx, values: dict[str, Any], errors: dict[str, str], refused: Refused | None,
                status: int = 200) -> Response:  # fmt: skip
    return ctx.render("settings.html", status_code=status, values=values, errors=errors, refused=refused,
                      profiles=await profile_names(ctx), delivery=DELIVERY, levels=LEVELS, presets=PRESETS)  # fmt: skip


@router.get("/settings", response_class=HTMLResponse)
async def settings_page(ctx: Signed) -> Response:
    values, refused = await ctx.try_call("profile-svc settings_get")
    return await _page(ctx, values or {}, {}, refused, refused.status if refused else 200)


def _ports(raw: str) -> list[Any]:
    out: list[Any] = []
    for part in raw.replace(";", ",").replace(" ", ",").split(","):
        if part.strip():
            out.append(int(part) if part.strip().isdigit() else part.strip())
    return out


@router.post("/settings")
async def save(ctx: Signed) -> Response:
    form = await ctx.form()
    body: dict[str, Any] = {
        "default_profile_id": text(form, "default_profile_id") or None,
        "incoming_delivery": text(form, "incoming_delivery"),
        "outgoing_delivery": text(form, "outgoing_delivery"),
        "act_delivery": text(form, "act_delivery"),
        "alert_levels": texts(form, "alert_levels"),
        "port_preset": text(form, "port_preset"),
        **{name: form.get(name) == "true" for name in BOOLS},
    }
    if body["port_preset"] == "custom":
        body["allowed_ports"] = _ports(text(form, "allowed_ports"))
    retest = text(form, "retest_interval_s").strip()
    if retest:  # left empty: the default (daily); not a number: profile-svc names the field
        body["retest_interval_s"] = int(retest) if retest.isdigit() else retest
    try:
        await ctx.call("profile-svc settings_put", body=body)
    except Refused as exc:
        values = {**body, "allowed_ports": text(form, "allowed_ports")}
        errors = {k.split(".")[0]: v for k, v in reversed(list(exc.by_field().items()))}
        return await _page(ctx, values, errors, exc, exc.status)
    return back("/settings", "Email settings saved.")
