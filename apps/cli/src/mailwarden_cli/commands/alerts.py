"""``mailwarden alerts``: alert walls (alert-svc) and live alerts on ``mailwarden.alerts.>``."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from nats.aio.msg import Msg

from contracts.subjects import ALERTS, is_subject_token
from mailwarden_cli import render
from mailwarden_cli.client import Bus
from mailwarden_cli.commands.events import Count, Last, Since, decode
from mailwarden_cli.options import JsonOut, prune
from mailwarden_cli.runner import emit_json, out, run
from mailwarden_cli.tail import follow as tail_follow
from mailwarden_cli.tail import parse_since

SERVICE = "alert-svc"
app = typer.Typer(
    rich_markup_mode=None, help="Alerts: list a wall, follow live, mark read, delete.", no_args_is_help=True
)

AlertId = Annotated[str, typer.Argument(help="The alert id.")]
Recipient = Annotated[str | None, typer.Option("--recipient", help="KIND:ID, e.g. user:u42 or queue:q1.")]
Level = Annotated[str | None, typer.Option("--level", help="error, warning or information.")]


def recipient(text: str | None) -> tuple[str, str] | None:
    """``user:u42`` → ("user", "u42")."""
    if text is None:
        return None
    kind, _, rid = text.partition(":")
    if kind not in ("user", "queue") or not is_subject_token(rid):
        raise typer.BadParameter("KIND:ID with KIND user or queue, e.g. user:u42", param_hint="--recipient")
    return kind, rid


@app.command("list")
def list_(
    ctx: typer.Context,
    who: Recipient = None,
    level: Level = None,
    unread: Annotated[bool, typer.Option("--unread", help="Only unread alerts.")] = False,
    state: Annotated[str | None, typer.Option("--state", help="open or resolved.")] = None,
    mailbox: Annotated[str | None, typer.Option("--mailbox")] = None,
    profile: Annotated[str | None, typer.Option("--profile")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 50,
    cursor: Annotated[str | None, typer.Option("--cursor", help="Continue from a previous page.")] = None,
    as_json: JsonOut = False,
) -> None:
    """List alerts, newest first: one recipient's wall, or every wall."""
    rec = recipient(who)
    query = prune(
        {
            "recipient_kind": rec[0] if rec else None,
            "recipient_id": rec[1] if rec else None,
            "level": level,
            "unread": True if unread else None,
            "state": state,
            "mailbox_id": mailbox,
            "profile_id": profile,
            "limit": limit,
            "cursor": cursor,
        }
    )

    async def work(bus: Bus) -> None:
        page = await bus.call(SERVICE, "alerts.list", query)
        if as_json:
            emit_json(page)
        else:
            out.print(render.alerts_table(page["items"], page.get("next_cursor")))

    run(ctx, work)


@app.command()
def show(ctx: typer.Context, alert_id: AlertId, as_json: JsonOut = False) -> None:
    """Show one alert."""

    async def work(bus: Bus) -> None:
        alert = await bus.call(SERVICE, "alerts.get", {"alert_id": alert_id})
        if as_json:
            emit_json(alert)
        else:
            out.print(render.details(f"alert {alert_id}", sorted(alert.items())))

    run(ctx, work)


@app.command()
def read(
    ctx: typer.Context,
    alert_id: AlertId,
    unread: Annotated[bool, typer.Option("--unread", help="Mark unread instead.")] = False,
    as_json: JsonOut = False,
) -> None:
    """Mark an alert read (or unread)."""

    async def work(bus: Bus) -> None:
        alert = await bus.call(SERVICE, "alerts.mark_read", {"alert_id": alert_id, "read": not unread})
        if as_json:
            emit_json(alert)
        else:
            out.print(f"alert {alert_id} marked {'unread' if unread else 'read'}")

    run(ctx, work)


@app.command()
def delete(
    ctx: typer.Context,
    alert_id: Annotated[
        str | None, typer.Argument(help="The alert id (or --recipient for a whole wall).")
    ] = None,
    who: Recipient = None,
    as_json: JsonOut = False,
) -> None:
    """Delete one alert, or every alert of one recipient with --recipient."""
    rec = recipient(who)
    if (alert_id is None) == (rec is None):
        raise typer.BadParameter("give an alert id or --recipient, not both")

    async def work(bus: Bus) -> None:
        if rec is not None:
            result = await bus.call(
                SERVICE, "alerts.delete_all", {"recipient_kind": rec[0], "recipient_id": rec[1]}
            )
        else:
            result = await bus.call(SERVICE, "alerts.delete", {"alert_id": alert_id})
        if as_json:
            emit_json(result)
        else:
            out.print(f"deleted {result.get('deleted', 0)} alert(s)")

    run(ctx, work)


def alert_subject(rec: tuple[str, str] | None, level: str | None) -> str:
    if rec is None and level is None:
        return f"{ALERTS}.>"
    if level is not None and not is_subject_token(level):
        raise typer.BadParameter("a level: error, warning or information", param_hint="--level")
    kind, rid = rec or ("*", "*")
    return f"{ALERTS}.{kind}.{rid}.{level or '*'}"


@app.command("follow")
def follow_(
    ctx: typer.Context,
    who: Recipient = None,
    level: Level = None,
    since: Since = None,
    last: Last = None,
    count: Count = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON alert per line.")] = False,
) -> None:
    """Print alerts as they are raised (every recipient, or one with --recipient)."""
    subject = alert_subject(recipient(who), level)
    start = parse_since(since)

    def show(msg: Msg) -> None:
        body = decode(msg.data)
        alert: dict[str, Any] = body.get("data", body) if isinstance(body, dict) else {"message": body}
        if as_json:
            sys.stdout.write(json.dumps({"subject": msg.subject, **alert}, default=str) + "\n")
            sys.stdout.flush()
        else:
            out.print(render.alert_line(alert), soft_wrap=True)

    async def work(bus: Bus) -> None:
        await tail_follow(bus, subject, show, since=start, last=last, count=count)

    run(ctx, work)
