"""``mailwarden sync``: the email sync-svc synchronizes (``sync tail``) and each mailbox's sync
(``sync status``, ``pause``, ``resume``, ``resync``)."""

from __future__ import annotations

import json
import sys
from datetime import date
from typing import Annotated, Any

import typer
from nats.aio.msg import Msg
from rich.text import Text

from contracts.subjects import EMAIL_RECEIVED
from mailwarden_cli import render
from mailwarden_cli.client import Bus
from mailwarden_cli.options import JsonOut
from mailwarden_cli.runner import emit_json, out, run
from mailwarden_cli.tail import follow, parse_since

SERVICE = "sync-svc"
app = typer.Typer(help="Incoming email (sync-svc): follow it, and each mailbox's sync.", no_args_is_help=True)

MailboxId = Annotated[str, typer.Argument(help="The mailbox id.")]


def one_line(data: dict[str, Any]) -> Text:
    """``<received> <mailbox> <from> <subject>  [size, attachments, flags]``."""
    senders = data.get("from") or []
    sender = senders[0].get("address", "?") if senders else "?"
    when = (data.get("internal_date") or data.get("date") or "")[:19]
    line = Text(f"{when}  ", style="dim")
    line.append(f"{data['mailbox']['mailbox_id']}  ", style="cyan")
    line.append(f"{sender}  ", style="bold")
    line.append(data.get("subject") or "(no subject)")
    extras = [f"{data.get('size', 0):,} B"]
    if data.get("attachments"):
        extras.append(f"{len(data['attachments'])} attachment(s)")
    if data.get("too_large"):
        extras.append("too large")
    if data.get("parse_error"):
        extras.append("parse error")
    line.append(f"  [{', '.join(extras)}]", style="dim")
    return line


@app.command()
def tail(
    ctx: typer.Context,
    mailbox: Annotated[str | None, typer.Option("--mailbox", "-m", help="Only this mailbox.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Replay since 10m, 2h, 1d or an ISO time.")
    ] = None,
    last: Annotated[int | None, typer.Option("--last", min=1, help="Replay the last N first.")] = None,
    count: Annotated[int | None, typer.Option("--count", "-n", min=1, help="Stop after N messages.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One EmailReceived envelope per line.")] = False,
) -> None:
    """Follow EmailReceived live: one line per new message (Ctrl-C stops)."""
    subject = f"{EMAIL_RECEIVED}.{mailbox or '>'}"
    start = parse_since(since)

    def show(msg: Msg) -> None:
        body = json.loads(msg.data)
        if as_json:
            sys.stdout.write(json.dumps(body) + "\n")
            sys.stdout.flush()
            return
        out.print(one_line(body["data"]))

    async def work(bus: Bus) -> None:
        await follow(bus, subject, show, since=start, last=last, count=count)

    run(ctx, work)


def _state(view: dict[str, Any]) -> Any:
    error = view.get("last_error") or {}
    return render.details(
        f"sync of {view.get('mailbox_id')}",
        [
            ("synced", view.get("synced")),
            ("paused", view.get("paused")),
            ("protocol", view.get("protocol")),
            ("mode", view.get("mode")),
            ("uidvalidity", view.get("uidvalidity")),
            ("last uid", view.get("last_uid")),
            ("messages seen", view.get("messages_seen")),
            ("last sync", view.get("last_sync_at")),
            ("failing since", view.get("failing_since")),
            (
                "last error",
                f"{error.get('code')} at {error.get('step')}: {error.get('detail')}" if error else None,
            ),
            ("resync from", view.get("resync_from")),
        ],
    )


def _control(ctx: typer.Context, operation: str, payload: dict[str, Any], as_json: bool) -> None:
    async def work(bus: Bus) -> None:
        view = await bus.call(SERVICE, operation, payload)
        if as_json:
            emit_json(view)
        else:
            out.print(_state(view))

    run(ctx, work)


@app.command()
def status(ctx: typer.Context, mailbox_id: MailboxId, as_json: JsonOut = False) -> None:
    """Where a mailbox's sync stands: watermark, IDLE or polling, messages seen, last error."""
    _control(ctx, "state", {"mailbox_id": mailbox_id}, as_json)


@app.command()
def pause(ctx: typer.Context, mailbox_id: MailboxId, as_json: JsonOut = False) -> None:
    """Stop synchronizing a mailbox (its watermark is kept)."""
    _control(ctx, "pause", {"mailbox_id": mailbox_id}, as_json)


@app.command()
def resume(ctx: typer.Context, mailbox_id: MailboxId, as_json: JsonOut = False) -> None:
    """Synchronize a paused mailbox again."""
    _control(ctx, "resume", {"mailbox_id": mailbox_id}, as_json)


@app.command()
def resync(
    ctx: typer.Context,
    mailbox_id: MailboxId,
    from_date: Annotated[str, typer.Option("--from", help="A day, e.g. 2026-11-01.")],
    as_json: JsonOut = False,
) -> None:
    """Publish what arrived since a day and was never published (the rest is recognised)."""
    try:
        day = date.fromisoformat(from_date)
    except ValueError:
        raise typer.BadParameter("a day like 2026-11-01", param_hint="--from") from None
    _control(ctx, "resync", {"mailbox_id": mailbox_id, "from_date": day.isoformat()}, as_json)
