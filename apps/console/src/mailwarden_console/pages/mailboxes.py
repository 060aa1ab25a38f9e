"""Active Mailboxes: the list with filters, paging and bulk actions; one mailbox with its test trace."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from contracts.errors import CATALOG, ErrorCode
from mailwarden_console.client import Refused
from mailwarden_console.web import Ctx, Signed, back, text, texts

router = APIRouter()

OWN_SHOWN = 50
"""A mailbox owner's list shows at most this many of their mailboxes."""

FILTERS = (
    "profile_id",
    "approval",
    "incoming_status",
    "outgoing_status",
    "enabled",
    "owner_kind",
    "owner_id",
)
DELIVERY = [
    ("server_side_sync", "Server-Side Synchronization"),
    ("email_router", "Email Router"),
    ("none", "None"),
]
BULK = {
    "apply_defaults": ("mailbox-svc apply_defaults", "Default email settings applied to"),
    "approve": ("mailbox-svc approve", "Email approved for"),
    "reject": ("mailbox-svc reject", "Email rejected for"),
    "test": ("mailbox-svc test_many", "Test & Enable started for"),
}


async def profile_names(ctx: Ctx) -> dict[str, str]:
    """Profile id → name for the lists (ids alone when profiles may not be read)."""
    page, _ = await ctx.try_call("profile-svc list", params={"limit": 200})
    return {p["profile_id"]: p["name"] for p in (page or {}).get("items", [])}


async def own_mailboxes(ctx: Ctx) -> tuple[list[dict[str, Any]], Refused | None]:
    """A mailbox owner's own mailboxes (``whoami`` names them; the list operation is not theirs)."""
    identity, refused = await ctx.try_call("mailbox-svc whoami")
    items = []
    for own in (identity or {}).get("own_mailboxes", [])[:OWN_SHOWN]:
        mailbox, _ = await ctx.try_call("mailbox-svc get", path={"mailbox_id": own["mailbox_id"]})
        if mailbox is not None:
            items.append(mailbox)
    return items, refused


@router.get("/mailboxes", response_class=HTMLResponse)
async def mailbox_list(ctx: Signed, after: str = "") -> Response:
    if ctx.session.only_own("mailboxes:read"):
        items, refused = await own_mailboxes(ctx)
        return ctx.render("mailboxes.html", items=items, next_after=None, after="", filters={}, base="",
                          refused=refused, profiles=await profile_names(ctx), own_only=True)  # fmt: skip
    query = ctx.request.query_params
    filters = {name: query.get(name, "") for name in FILTERS}
    params: dict[str, Any] = {k: v for k, v in filters.items() if v}
    params.update(limit=ctx.console.settings.page_size, after=after or None)
    page, refused = await ctx.try_call("mailbox-svc list", params=params)
    names = await profile_names(ctx)
    base = "&".join(f"{k}={v}" for k, v in filters.items() if v)
    return ctx.render(
        "mailboxes.html",
        items=(page or {}).get("items", []),
        next_after=(page or {}).get("next_after"),
        after=after,
        filters=filters,
        base=base,
        refused=refused,
        profiles=names,
        own_only=False,
    )


def bulk_notice(label: str, result: dict[str, Any]) -> str:
    done, refused = result.get("done", []), result.get("refused", [])
    notice = f"{label} {len(done)} mailbox{'es' if len(done) != 1 else ''}."
    if refused:
        shown = "; ".join(f"{r['mailbox_id']}: {r['message']}" for r in refused[:5])
        more = f" (and {len(refused) - 5} more)" if len(refused) > 5 else ""
        notice += f" Refused {len(refused)}: {shown}{more}."
    return notice


@router.post("/mailboxes/actions")
async def bulk_action(ctx: Signed) -> Response:
    form = await ctx.form()
    ids, action = texts(form, "mailbox_ids"), text(form, "action")
    back_to = text(form, "back") or "/mailboxes"
    if not back_to.startswith("/mailboxes"):
        back_to = "/mailboxes"
    if not ids:
        return back(back_to, "Select at least one mailbox first.")
    if action == "edit":
        return back("/mailboxes/change?" + "&".join(f"mailbox_ids={i}" for i in ids))
    if action not in BULK:
        return back(back_to, "Unknown action.")
    key, label = BULK[action]
    try:
        result = await ctx.call(key, body={"mailbox_ids": ids})
    except Refused as exc:
        return back(back_to, exc.message)
    return back(back_to, bulk_notice(label, result))


@router.get("/mailboxes/change", response_class=HTMLResponse)
async def change_form(ctx: Signed) -> Response:
    ids = ctx.request.query_params.getlist("mailbox_ids")
    return ctx.render("mailbox_change.html", ids=ids, profiles=await profile_names(ctx), delivery=DELIVERY,
                      errors={}, refused=None)  # fmt: skip


@router.post("/mailboxes/change")
async def change_many(ctx: Signed) -> Response:
    form = await ctx.form()
    ids = texts(form, "mailbox_ids")
    changes = {
        name: text(form, name)
        for name in ("profile_id", "incoming_delivery", "outgoing_delivery", "act_delivery")
        if text(form, name)
    }
    try:
        result = await ctx.call(
            "mailbox-svc change_many", body={"selection": {"mailbox_ids": ids}, "changes": changes}
        )
    except Refused as exc:
        errors = {k.removeprefix("changes."): v for k, v in exc.by_field().items()}
        return ctx.render("mailbox_change.html", status_code=exc.status, ids=ids, delivery=DELIVERY,
                          profiles=await profile_names(ctx), errors=errors, refused=exc)  # fmt: skip
    return back("/mailboxes", bulk_notice("Changed", result))


@router.get("/mailboxes/new", response_class=HTMLResponse)
async def new_form(ctx: Signed) -> Response:
    return ctx.render("mailbox_new.html", values={}, errors={}, refused=None,
                      profiles=await profile_names(ctx), delivery=DELIVERY)  # fmt: skip


@router.post("/mailboxes/new")
async def create(ctx: Signed) -> Response:
    form = await ctx.form()
    values = {k: text(form, k) for k in form if k not in ("csrf", "password")}
    body: dict[str, Any] = {
        "email": values.get("email", ""),
        "owner": {
            "kind": values.get("owner.kind", "user"),
            "id": values.get("owner.id", ""),
            "name": values.get("owner.name", ""),
            "email": values.get("owner.email") or None,
        },
        "profile_id": values.get("profile_id") or None,
    }
    if values.get("mailbox_id"):
        body["mailbox_id"] = values["mailbox_id"]
    for name in ("incoming_delivery", "outgoing_delivery", "act_delivery"):
        if values.get(name):
            body[name] = values[name]
    if values.get("username") or text(form, "password"):
        body["credentials"] = {"username": values.get("username", ""), "password": text(form, "password")}
    try:
        created = await ctx.call("mailbox-svc create", body=body)
    except Refused as exc:
        errors = {k.replace("credentials.", ""): v for k, v in exc.by_field().items()}
        return ctx.render("mailbox_new.html", status_code=exc.status, values=values, errors=errors,
                          refused=exc, profiles=await profile_names(ctx), delivery=DELIVERY)  # fmt: skip
    return back(f"/mailboxes/{created['mailbox_id']}", f"Mailbox {created['email']} added.")


def remediation(code: str | None) -> str:
    try:
        return CATALOG[ErrorCode(code)].remediation if code else ""
    except ValueError:
        return ""


async def mailbox_state(ctx: Ctx, mailbox_id: str, test_id: str = "") -> dict[str, Any]:
    """The mailbox, its test history and one run's trace (``test_id``'s, else the last), for the templates."""
    mailbox, refused = await ctx.try_call("mailbox-svc get", path={"mailbox_id": mailbox_id})
    history, history_refused = (None, None)
    if mailbox is not None:
        history, history_refused = await ctx.try_call(
            "mailbox-svc history", path={"mailbox_id": mailbox_id}, params={"limit": 20}
        )
    runs = (history or {}).get("items", [])
    last = next((r for r in runs if r["test_id"] == test_id), runs[0] if runs else None)
    directions = []
    if last:
        for name in ("incoming", "outgoing"):
            part = last["result"].get(name)
            if part:
                error = part.get("error") or {}
                directions.append({**part, "remediation": remediation(error.get("code"))})
    last_error = (mailbox or {}).get("last_error") or {}
    sync, sync_refused = None, None
    if mailbox is not None and ctx.session.may("mailboxes:read"):
        # sync-svc's state is owner-scoped: an owner reads their own mailbox's (sync-svc decides).
        sync, sync_refused = await ctx.try_call("sync-svc state", path={"mailbox_id": mailbox_id})
    return {
        "sync": sync,
        "sync_refused": sync_refused,
        "mailbox": mailbox,
        "refused": refused or history_refused,
        "runs": runs,
        "last": last,
        "directions": directions,
        "last_error_remediation": remediation(last_error.get("code")),
        "shown_test": test_id if last and last["test_id"] == test_id else "",
    }


@router.get("/mailboxes/{mailbox_id}", response_class=HTMLResponse)
async def mailbox_page(ctx: Signed, mailbox_id: str, test: str = "") -> Response:
    state = await mailbox_state(ctx, mailbox_id, test)
    status = 200 if state["mailbox"] else (state["refused"].status if state["refused"] else 404)
    return ctx.render("mailbox.html", status_code=status, mailbox_id=mailbox_id,
                      profiles=await profile_names(ctx), cred_errors={}, **state)  # fmt: skip


@router.get("/mailboxes/{mailbox_id}/state", response_class=HTMLResponse)
async def mailbox_fragment(ctx: Signed, mailbox_id: str, test: str = "") -> Response:
    """The live part of the mailbox page (statuses, trace, history), re-read when the mailbox changes."""
    state = await mailbox_state(ctx, mailbox_id, test)
    return ctx.render("mailbox_state.html", mailbox_id=mailbox_id, **state)


@router.post("/mailboxes/{mailbox_id}/test")
async def test_one(ctx: Signed, mailbox_id: str) -> Response:
    await ctx.form()
    try:
        accepted = await ctx.call("mailbox-svc test", path={"mailbox_id": mailbox_id})
    except Refused as exc:
        return back(f"/mailboxes/{mailbox_id}", exc.message)
    return back(f"/mailboxes/{mailbox_id}", f"Test & Enable started (attempt {accepted['attempt']}).")


@router.post("/mailboxes/{mailbox_id}/credentials")
async def set_credentials(ctx: Signed, mailbox_id: str) -> Response:
    """Write-only: the password is sent to mailbox-svc and never shown, logged or kept here."""
    form = await ctx.form()
    login: dict[str, str] = {}
    if text(form, "username"):
        login["username"] = text(form, "username")
    if text(form, "password"):
        login["password"] = text(form, "password")
    if not login:
        return back(f"/mailboxes/{mailbox_id}", "Nothing to change: enter a user name or a password.")
    try:
        await ctx.call("mailbox-svc update", path={"mailbox_id": mailbox_id}, body={"credentials": login})
    except Refused as exc:
        if exc.status in (403, 404, 503):  # nothing to show next to a field: say it on the page
            return back(f"/mailboxes/{mailbox_id}", exc.message)
        state = await mailbox_state(ctx, mailbox_id)
        errors = {k.removeprefix("credentials."): v for k, v in exc.by_field().items()}
        return ctx.render("mailbox.html", status_code=exc.status, mailbox_id=mailbox_id,
                          profiles=await profile_names(ctx), cred_errors=errors, cred_refused=exc,
                          **state)  # fmt: skip
    return back(f"/mailboxes/{mailbox_id}", "Credentials saved. Test & Enable the mailbox to use them.")


SYNC_DONE = {
    "pause": "Sync paused: the worker stops within one reconcile interval; the watermark is kept.",
    "resume": "Sync resumed.",
    "resync": "Re-sync asked: what arrived since {from_date} and was never published will be.",
}


@router.post("/mailboxes/{mailbox_id}/sync/{action}")
async def sync_action(ctx: Signed, mailbox_id: str, action: str) -> Response:
    """Pause, resume or re-sync the mailbox's sync (sync-svc checks ``mailboxes:write``)."""
    form = await ctx.form()
    page = f"/mailboxes/{mailbox_id}"
    if action not in SYNC_DONE:
        return back(page, "Unknown sync action.")
    body = {"from_date": text(form, "from_date")} if action == "resync" else None
    try:
        await ctx.call(f"sync-svc {action}", path={"mailbox_id": mailbox_id}, body=body)
    except Refused as exc:
        field_error = exc.by_field().get("from_date")
        return back(page, f"Re-sync from: {field_error}" if field_error else exc.message)
    return back(page, SYNC_DONE[action].format(from_date=text(form, "from_date")))
