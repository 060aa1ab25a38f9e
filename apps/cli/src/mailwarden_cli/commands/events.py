"""``mailwarden events tail``: watch any subject, events pretty-printed."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from nats.aio.msg import Msg
from rich.json import JSON
from rich.text import Text

from mailwarden_cli.client import Bus
from mailwarden_cli.runner import out, run
from mailwarden_cli.tail import follow, parse_since

app = typer.Typer(rich_markup_mode=None, help="Watch events on the bus.", no_args_is_help=True)

Since = Annotated[
    str | None, typer.Option("--since", help="Replay from JetStream since 10m, 2h, 1d or an ISO time.")
]
Last = Annotated[
    int | None, typer.Option("--last", min=1, help="Replay the last N messages from JetStream first.")
]
Count = Annotated[int | None, typer.Option("--count", "-n", min=1, help="Stop after N messages.")]
JsonLines = Annotated[bool, typer.Option("--json", help="One JSON object per line: subject and message.")]


def decode(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return data.decode("utf-8", errors="replace")


def printer(as_json: bool) -> Any:
    def show(msg: Msg) -> None:
        body = decode(msg.data)
        if as_json:
            sys.stdout.write(json.dumps({"subject": msg.subject, "message": body}, default=str) + "\n")
            sys.stdout.flush()
            return
        head = Text(msg.subject, style="bold")
        if isinstance(body, dict) and "type" in body:
            head.append(f"  {body.get('type')}  {body.get('occurred_at', '')}", style="cyan")
        out.print(head)
        if isinstance(body, (dict, list)):
            out.print(JSON.from_data(body, default=str), soft_wrap=True)
        else:
            out.print(str(body), markup=False, soft_wrap=True)

    return show


@app.command()
def tail(
    ctx: typer.Context,
    subject: Annotated[
        str, typer.Argument(help="A subject; wildcards allowed, e.g. 'mailwarden.mailbox.>'.")
    ],
    since: Since = None,
    last: Last = None,
    count: Count = None,
    as_json: JsonLines = False,
) -> None:
    """Print every message on SUBJECT as it arrives (Ctrl-C stops)."""
    start = parse_since(since)

    async def work(bus: Bus) -> None:
        await follow(bus, subject, printer(as_json), since=start, last=last, count=count)

    run(ctx, work)
