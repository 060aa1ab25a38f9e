"""Email server profiles: list, create and edit (the service's field messages beside the fields),
set as default, delete (with the in-use count) and Test & Enable all of a profile's mailboxes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from mailwarden_console.client import Refused
from mailwarden_console.forms import flat, nest
from mailwarden_console.web import Ctx, Signed, back

router = APIRouter()

INTS = {
    "incoming.port",
    "outgoing.port",
    "advanced.max_concurrent_connections",
    "advanced.min_polling_interval_min",
}
FLOATS = {"advanced.connect_timeout_s"}
BOOLS = {
    "use_same_settings_for_outgoing",
    "is_default",
    "advanced.verify_tls",
    "advanced.allow_plaintext_auth",
    "advanced.email_alert_on_majority_failure",
    "advanced.move_failed_to_undeliverable",
}
NEW_DEFAULTS = {
    "incoming_protocol": "imap",
    "incoming.tls": "implicit",
    "outgoing.tls": "starttls",
    "owner.kind": "user",
    "credential_source": "mailbox",
    "use_same_settings_for_outgoing": False,
    "advanced.verify_tls": True,
    "advanced.connect_timeout_s": 15,
    "advanced.max_concurrent_connections": 10,
}


def body_of(form: Any) -> dict[str, Any]:
    body = nest(form, ints=INTS, floats=FLOATS, bools=BOOLS, skip={"csrf"})
    owner = body.get("owner")
    if isinstance(owner, dict):
        owner.setdefault("email", None)
    return body


@router.get("/profiles", response_class=HTMLResponse)
async def profile_list(ctx: Signed, offset: int = 0, q: str = "") -> Response:
    size = ctx.console.settings.page_size
    page, refused = await ctx.try_call(
        "profile-svc list", params={"limit": size, "offset": max(offset, 0), "name_contains": q.strip()}
    )
    page = page or {"items": [], "total": 0}
    return ctx.render("profiles.html", page=page, refused=refused, offset=offset, size=size, q=q)


def _form(ctx: Ctx, values: dict[str, Any], errors: dict[str, str], refused: Refused | None,
          profile_id: str = "", status: int = 200) -> Response:  # fmt: skip
    return ctx.render(
        "profile_form.html", status_code=status, values=values, errors=errors, refused=refused,
        profile_id=profile_id,
    )  # fmt: skip


@router.get("/profiles/new", response_class=HTMLResponse)
async def new_form(ctx: Signed) -> Response:
    return _form(ctx, dict(NEW_DEFAULTS), {}, None)


@router.post("/profiles/new")
async def create(ctx: Signed) -> Response:
    form = await ctx.form()
    body = body_of(form)
    try:
        created = await ctx.call("profile-svc create", body=body)
    except Refused as exc:
        return _form(ctx, flat(body), exc.by_field(), exc, status=exc.status)
    return back("/profiles", f"Profile {created['name']} created.")


@router.get("/profiles/{profile_id}", response_class=HTMLResponse)
async def edit_form(ctx: Signed, profile_id: str) -> Response:
    profile, refused = await ctx.try_call("profile-svc get", path={"profile_id": profile_id})
    if profile is None:
        return _form(ctx, {}, {}, refused, profile_id, status=refused.status if refused else 404)
    return _form(ctx, flat(profile), {}, None, profile_id)


@router.post("/profiles/{profile_id}")
async def update(ctx: Signed, profile_id: str) -> Response:
    form = await ctx.form()
    body = body_of(form)
    try:
        await ctx.call("profile-svc update", path={"profile_id": profile_id}, body=body)
    except Refused as exc:
        return _form(ctx, flat(body), exc.by_field(), exc, profile_id, status=exc.status)
    return back("/profiles", f"Profile {body.get('name', profile_id)} saved.")


@router.post("/profiles/{profile_id}/default")
async def make_default(ctx: Signed, profile_id: str) -> Response:
    await ctx.form()
    try:
        await ctx.call("profile-svc update", path={"profile_id": profile_id}, body={"is_default": True})
    except Refused as exc:
        return back("/profiles", exc.message)
    return back("/profiles", "Default profile changed: new mailboxes get it.")


async def in_use(ctx: Ctx, profile_id: str) -> tuple[int, bool]:
    """How many mailboxes use the profile (counted up to 1000; ``True`` when there are more)."""
    count, after = 0, None
    for _ in range(2):
        page = await ctx.call(
            "mailbox-svc list", params={"profile_id": profile_id, "limit": 500, "after": after}
        )
        count += len(page["items"])
        after = page.get("next_after")
        if not after:
            return count, False
    return count, True


@router.get("/profiles/{profile_id}/delete", response_class=HTMLResponse)
async def delete_form(ctx: Signed, profile_id: str) -> Response:
    profile, refused = await ctx.try_call("profile-svc get", path={"profile_id": profile_id})
    used, more, count_refused = 0, False, None
    if profile is not None:
        try:
            used, more = await in_use(ctx, profile_id)
        except Refused as exc:
            count_refused = exc
    return ctx.render("profile_delete.html", profile=profile, profile_id=profile_id, refused=refused,
                      used=used, more=more, count_refused=count_refused)  # fmt: skip


@router.post("/profiles/{profile_id}/delete")
async def delete(ctx: Signed, profile_id: str) -> Response:
    await ctx.form()
    try:
        await ctx.call("profile-svc delete", path={"profile_id": profile_id})
    except Refused as exc:
        message = exc.by_field().get("profile_id", exc.message) if exc.status != 403 else exc.message
        return back(f"/profiles/{profile_id}/delete", message)
    return back("/profiles", "Profile deleted.")


@router.post("/profiles/{profile_id}/test")
async def test_and_enable(ctx: Signed, profile_id: str) -> Response:
    await ctx.form()
    try:
        job = await ctx.call("mailbox-svc job_start", body={"profile_id": profile_id})
    except Refused as exc:
        return back("/profiles", exc.message)
    return back(f"/jobs/{job['job_id']}", f"Test & Enable started for {job['total']} mailboxes.")
