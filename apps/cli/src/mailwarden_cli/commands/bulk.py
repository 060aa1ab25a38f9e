"""Bulk mailbox actions: approve, reject, apply defaults, change many, Test & Enable (with --wait), rotate keys."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from contracts.models import DeliveryMethod
from mailwarden_cli import render
from mailwarden_cli.client import Bus
from mailwarden_cli.options import SMTP_MODES, JsonOut, SmtpModeChoice, prune
from mailwarden_cli.runner import emit_json, err, out, run
from mailwarden_cli.waiting import StatusWatch, summary

SERVICE = "mailbox-svc"

Ids = Annotated[list[str] | None, typer.Argument(help="Mailbox ids (or select with --profile / --all).")]
ByProfile = Annotated[str | None, typer.Option("--profile", help="Every active mailbox of this profile.")]
ByApproval = Annotated[
    str | None, typer.Option("--approval", help="Only pending, approved or rejected ones.")
]
All = Annotated[bool, typer.Option("--all", help="Every active mailbox.")]
SmtpModeOpt = Annotated[
    SmtpModeChoice | None,
    typer.Option("--smtp-mode", help=f"This test's outgoing mode (default: the profile's). {SMTP_MODES}"),
]
Wait = Annotated[bool, typer.Option("--wait", help="Wait for every result, with a progress bar.")]
WaitTimeout = Annotated[
    float, typer.Option("--wait-timeout", help="Give up waiting after this many seconds.")
]
Delivery = Annotated[DeliveryMethod | None, typer.Option()]


def selection(
    ids: list[str] | None, profile: str | None, approval: str | None, every: bool
) -> dict[str, Any]:
    """The ``Selection`` body: explicit ids, or a filter; giving neither or both is a usage error."""
    filtered = profile is not None or approval is not None or every
    if ids and filtered:
        raise typer.BadParameter("give mailbox ids or a filter (--profile, --approval, --all), not both")
    if ids:
        return {"mailbox_ids": ids}
    if not filtered:
        raise typer.BadParameter("give mailbox ids, --profile, --approval or --all")
    narrowed = prune({"profile_id": profile, "approval": approval})
    if every and not narrowed:
        return {"all": True}  # the service refuses an empty filter without this explicit word
    return {"filter": narrowed}


def _bulk_exit(action: str, result: dict[str, Any], as_json: bool) -> int:
    if as_json:
        emit_json(result)
    else:
        out.print(render.bulk_result(action, result))
    return 1 if result.get("refused") else 0


async def _test_and_wait(
    bus: Bus, operation: str, payload: dict[str, Any], wait: bool, patience: float, as_json: bool
) -> int:
    """Request tests; with ``wait``, follow them to their results and print a summary by error code."""
    async with StatusWatch(bus) as watch:
        result = await bus.call(SERVICE, operation, payload)
        if not wait:
            return _bulk_exit(operation.replace("_", " "), result, as_json)
        done = set(result.get("done") or [])
        test_ids = {m: t for m, t in (result.get("test_ids") or {}).items() if m in done}
        refused = {r["mailbox_id"]: r["code"] for r in result.get("refused") or []}
        outcomes, pending = await watch.wait(test_ids, patience, err)
    counts = summary(outcomes, refused, pending)
    failed = bool(refused) or bool(pending) or any(not o.ok for o in outcomes.values())
    if as_json:
        emit_json(
            {
                "results": [o.as_json() for o in outcomes.values()],
                "refused": result.get("refused") or [],
                "still_running": pending,
                "summary": dict(counts),
            }
        )
        return 1 if failed else 0
    table = Table(title="test results", title_justify="left")
    for col in ("mailbox", "incoming", "outgoing", "result"):
        table.add_column(col, overflow="fold")
    for mid, o in sorted(outcomes.items()):
        table.add_row(mid, render.status(o.incoming), render.status(o.outgoing), ", ".join(o.codes))
    for r in result.get("refused") or []:
        table.add_row(r["mailbox_id"], "-", "-", f"refused {r['code']}: {r.get('message', '')}")
    for mid in pending:
        table.add_row(mid, "-", "-", f"no result within {patience:g} s")
    out.print(table)
    out.print(render.code_summary(counts))
    return 1 if failed else 0


def register(app: typer.Typer) -> None:
    """Attach the bulk commands to the ``mailbox`` group."""

    @app.command()
    def approve(
        ctx: typer.Context,
        ids: Ids = None,
        profile: ByProfile = None,
        approval: ByApproval = None,
        every: All = False,
        as_json: JsonOut = False,
    ) -> None:
        """Approve the email addresses of mailboxes (needed before they can be enabled)."""
        sel = selection(ids, profile, approval, every)

        async def work(bus: Bus) -> int:
            return _bulk_exit("approve", await bus.call(SERVICE, "approve", sel), as_json)

        run(ctx, work)

    @app.command()
    def reject(
        ctx: typer.Context,
        ids: Ids = None,
        profile: ByProfile = None,
        approval: ByApproval = None,
        every: All = False,
        as_json: JsonOut = False,
    ) -> None:
        """Reject the email addresses of mailboxes (they are disabled)."""
        sel = selection(ids, profile, approval, every)

        async def work(bus: Bus) -> int:
            return _bulk_exit("reject", await bus.call(SERVICE, "reject", sel), as_json)

        run(ctx, work)

    @app.command("apply-defaults")
    def apply_defaults(
        ctx: typer.Context,
        ids: Ids = None,
        profile: ByProfile = None,
        approval: ByApproval = None,
        every: All = False,
        wait: Wait = False,
        wait_timeout: WaitTimeout = 300.0,
        as_json: JsonOut = False,
    ) -> None:
        """Apply the organisation's default profile and delivery methods, then Test & Enable."""
        sel = selection(ids, profile, approval, every)

        async def work(bus: Bus) -> int:
            return await _test_and_wait(bus, "apply_defaults", sel, wait, wait_timeout, as_json)

        run(ctx, work)

    @app.command()
    def change(
        ctx: typer.Context,
        ids: Ids = None,
        profile: ByProfile = None,
        approval: ByApproval = None,
        every: All = False,
        set_profile: Annotated[
            str | None, typer.Option("--set-profile", help="Move them to this profile.")
        ] = None,
        incoming_delivery: Delivery = None,
        outgoing_delivery: Delivery = None,
        act_delivery: Delivery = None,
        as_json: JsonOut = False,
    ) -> None:
        """Change many mailboxes at once: profile and delivery methods."""
        sel = selection(ids, profile, approval, every)
        changes = prune(
            {
                "profile_id": set_profile,
                "incoming_delivery": incoming_delivery.value if incoming_delivery else None,
                "outgoing_delivery": outgoing_delivery.value if outgoing_delivery else None,
                "act_delivery": act_delivery.value if act_delivery else None,
            }
        )
        if not changes:
            raise typer.BadParameter("give --set-profile or a delivery method to change")

        async def work(bus: Bus) -> int:
            result = await bus.call(SERVICE, "change_many", {"selection": sel, "changes": changes})
            return _bulk_exit("change", result, as_json)

        run(ctx, work)

    @app.command()
    def test(
        ctx: typer.Context,
        ids: Ids = None,
        profile: ByProfile = None,
        approval: ByApproval = None,
        every: All = False,
        wait: Wait = False,
        wait_timeout: WaitTimeout = 300.0,
        smtp_mode: SmtpModeOpt = None,
        as_json: JsonOut = False,
    ) -> None:
        """Test & Enable mailboxes; exit 1 if any test fails or is refused."""
        sel = selection(ids, profile, approval, every)
        if smtp_mode is not None:
            sel["smtp_mode"] = smtp_mode.value

        async def work(bus: Bus) -> int:
            return await _test_and_wait(bus, "test_many", sel, wait, wait_timeout, as_json)

        run(ctx, work)

    @app.command("rotate-keys")
    def rotate_keys(ctx: typer.Context, as_json: JsonOut = False) -> None:
        """Re-encrypt every stored credential under the primary key; exit 1 if some cannot be read."""

        async def work(bus: Bus) -> int:
            report = await bus.call(SERVICE, "rotate_keys", {})
            if as_json:
                emit_json(report)
            else:
                out.print(
                    render.details(
                        "key rotation",
                        [
                            ("primary key", report.get("primary_kid")),
                            ("examined", report.get("examined")),
                            ("rotated", report.get("rotated")),
                            ("already primary", report.get("already_primary")),
                            ("unreadable", report.get("unreadable")),
                            ("unreadable mailboxes", report.get("unreadable_mailboxes")),
                        ],
                    )
                )
            return 1 if report.get("unreadable") else 0

        run(ctx, work)
