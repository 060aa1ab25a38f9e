"""``mailwarden mailbox``: create, import, list and show mailboxes (mailbox-svc); bulk actions in :mod:`.bulk`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from contracts.models import DeliveryMethod
from mailwarden_cli import csvimport, render
from mailwarden_cli.client import Bus
from mailwarden_cli.commands import bulk
from mailwarden_cli.options import (
    JsonOut,
    OwnerEmailOpt,
    OwnerIdOpt,
    OwnerKindOpt,
    OwnerNameOpt,
    Quiet,
    owner,
    prune,
)
from mailwarden_cli.runner import emit_json, out, run, usage

SERVICE = "mailbox-svc"
app = typer.Typer(
    rich_markup_mode=None, help="Mailboxes: add, import, list, show, approve, test.", no_args_is_help=True
)
bulk.register(app)

MailboxId = Annotated[str, typer.Argument(help="The mailbox id.")]
Delivery = Annotated[DeliveryMethod | None, typer.Option()]
Username = Annotated[str | None, typer.Option("--username", help="Incoming (and outgoing) login.")]
Password = Annotated[
    str | None,
    typer.Option(
        "--password", envvar="MW_MAILBOX_PASSWORD", help="Its password (or env MW_MAILBOX_PASSWORD)."
    ),
]
SmtpUser = Annotated[str | None, typer.Option("--smtp-username", help="A separate outgoing login.")]
SmtpPassword = Annotated[str | None, typer.Option("--smtp-password", envvar="MW_MAILBOX_SMTP_PASSWORD")]


def _login(username: str | None, password: str | None) -> dict[str, Any] | None:
    return prune({"username": username, "password": password}) if username or password else None


@app.command()
def add(
    ctx: typer.Context,
    email: Annotated[str, typer.Option("--email", help="The mailbox's address.")],
    owner_id: Annotated[str, typer.Option("--owner-id", help="The user or queue owning it.")],
    mailbox_id: Annotated[
        str | None, typer.Option("--id", help="Choose the id (default: generated).")
    ] = None,
    profile: Annotated[str | None, typer.Option("--profile", help="Email server profile id.")] = None,
    owner_kind: OwnerKindOpt = None,
    owner_name: OwnerNameOpt = None,
    owner_email: OwnerEmailOpt = None,
    username: Username = None,
    password: Password = None,
    smtp_username: SmtpUser = None,
    smtp_password: SmtpPassword = None,
    incoming_delivery: Delivery = None,
    outgoing_delivery: Delivery = None,
    act_delivery: Delivery = None,
    as_json: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """Add one mailbox (pending approval until approved)."""
    body = prune(
        {
            "mailbox_id": mailbox_id,
            "email": email,
            "owner": owner(owner_kind, owner_id, owner_name, owner_email),
            "profile_id": profile,
            "credentials": _login(username, password),
            "outgoing_credentials": _login(smtp_username, smtp_password),
            "incoming_delivery": incoming_delivery.value if incoming_delivery else None,
            "outgoing_delivery": outgoing_delivery.value if outgoing_delivery else None,
            "act_delivery": act_delivery.value if act_delivery else None,
        }
    )

    async def work(bus: Bus) -> None:
        _show(await bus.call(SERVICE, "create", body), as_json, quiet)

    run(ctx, work)


def _show(view: dict[str, Any], as_json: bool, quiet: bool = False) -> None:
    if quiet:
        out.print(view["mailbox_id"])
    elif as_json:
        emit_json(view)
    else:
        out.print(render.mailbox_view(view))


@app.command("import")
def import_(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="CSV with a header line.", dir_okay=False, allow_dash=True)],
    as_json: JsonOut = False,
) -> None:
    """Create mailboxes from a CSV file; bad rows are reported (row = line number), valid rows created.

    Columns: mailbox_id, email, owner_kind, owner_id, owner_name, owner_email, profile_id, username,
    password, outgoing_username, outgoing_password, incoming_delivery, outgoing_delivery, act_delivery,
    process_email_received_after. email and owner_id are required.
    """
    try:
        text = (
            typer.get_text_stream("stdin").read()
            if str(path) == "-"
            else path.read_text(encoding="utf-8-sig")
        )
        rows, early = csvimport.parse(text)
    except (OSError, UnicodeDecodeError, csvimport.CsvProblem) as exc:
        usage(f"cannot import {path}: {exc}")
        return

    async def work(bus: Bus) -> int:
        report = await csvimport.create_rows(bus, rows)
        errors = sorted([*early, *report.errors], key=lambda e: e.line)
        if as_json:
            emit_json(
                {
                    "created": [{"row": line, "mailbox_id": mid} for line, mid in report.created],
                    "errors": [{"row": e.line, "field": e.field, "message": e.message} for e in errors],
                }
            )
        else:
            out.print(f"created {len(report.created)} mailbox(es), {len(errors)} row error(s)")
            if errors:
                table = Table(title="rows not imported", title_justify="left")
                for col in ("row", "field", "message"):
                    table.add_column(col, overflow="fold")
                for e in errors:
                    table.add_row(str(e.line), e.field, e.message)
                out.print(table)
        return 1 if errors else 0

    run(ctx, work)


@app.command("list")
def list_(
    ctx: typer.Context,
    profile: Annotated[str | None, typer.Option("--profile")] = None,
    approval: Annotated[str | None, typer.Option("--approval", help="pending, approved or rejected.")] = None,
    incoming_status: Annotated[str | None, typer.Option("--incoming-status")] = None,
    outgoing_status: Annotated[str | None, typer.Option("--outgoing-status")] = None,
    enabled: Annotated[bool | None, typer.Option("--enabled/--disabled")] = None,
    owner_id: OwnerIdOpt = None,
    owner_kind: OwnerKindOpt = None,
    inactive: Annotated[bool, typer.Option("--include-inactive", help="Deactivated ones too.")] = False,
    limit: Annotated[int, typer.Option("--limit")] = 50,
    after: Annotated[str | None, typer.Option("--after", help="Continue after this id.")] = None,
    as_json: JsonOut = False,
) -> None:
    """List mailboxes as a table."""
    query = prune(
        {
            "profile_id": profile,
            "approval": approval,
            "incoming_status": incoming_status,
            "outgoing_status": outgoing_status,
            "enabled": enabled,
            "owner_id": owner_id,
            "owner_kind": owner_kind.value if owner_kind else None,
            "limit": limit,
            "after": after,
        }
    )
    if inactive:
        query["active"] = None

    async def work(bus: Bus) -> None:
        page = await bus.call(SERVICE, "list", query)
        if as_json:
            emit_json(page)
        else:
            out.print(render.mailboxes_table(page["items"], page.get("next_after")))

    run(ctx, work)


@app.command()
def show(
    ctx: typer.Context,
    mailbox_id: MailboxId,
    runs: Annotated[int, typer.Option("--runs", help="How many past test runs to show.")] = 1,
    as_json: JsonOut = False,
) -> None:
    """Show a mailbox and the trace of its last test: steps, durations, facts, error and remediation."""

    async def work(bus: Bus) -> None:
        view = await bus.call(SERVICE, "get", {"mailbox_id": mailbox_id})
        history = await bus.call(SERVICE, "history", {"mailbox_id": mailbox_id, "limit": runs})
        items = history.get("items") or []
        if as_json:
            emit_json({"mailbox": view, "tests": items})
            return
        out.print(render.mailbox_view(view))
        if not items:
            out.print("no test run yet")
        for item in items:
            out.print(render.test_trace(item))

    run(ctx, work)


@app.command()
def update(
    ctx: typer.Context,
    mailbox_id: MailboxId,
    email: Annotated[str | None, typer.Option("--email")] = None,
    profile: Annotated[str | None, typer.Option("--profile")] = None,
    owner_kind: OwnerKindOpt = None,
    owner_id: OwnerIdOpt = None,
    owner_name: OwnerNameOpt = None,
    owner_email: OwnerEmailOpt = None,
    username: Username = None,
    password: Password = None,
    smtp_username: SmtpUser = None,
    smtp_password: SmtpPassword = None,
    as_json: JsonOut = False,
) -> None:
    """Change one mailbox (an omitted password is kept)."""
    changes = prune(
        {
            "email": email,
            "profile_id": profile,
            "owner": owner(owner_kind, owner_id, owner_name, owner_email),
            "credentials": _login(username, password),
            "outgoing_credentials": _login(smtp_username, smtp_password),
        }
    )
    if not changes:
        raise typer.BadParameter("give at least one field to change")

    async def work(bus: Bus) -> None:
        _show(await bus.call(SERVICE, "update", {"mailbox_id": mailbox_id, "changes": changes}), as_json)

    run(ctx, work)


@app.command()
def deactivate(ctx: typer.Context, mailbox_id: MailboxId, as_json: JsonOut = False) -> None:
    """Deactivate a mailbox: it is disabled and no longer tested."""

    async def work(bus: Bus) -> None:
        _show(await bus.call(SERVICE, "deactivate", {"mailbox_id": mailbox_id}), as_json)

    run(ctx, work)
