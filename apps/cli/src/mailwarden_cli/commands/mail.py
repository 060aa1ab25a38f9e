"""``mailwarden mail``: send mail through a mailbox (sender-svc), look a send up, follow outcomes."""

from __future__ import annotations

import asyncio
import base64
import mimetypes
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from nats.aio.msg import Msg

from mailwarden_cli.client import Bus
from mailwarden_cli.commands.events import Count, JsonLines, Last, Since, decode, printer
from mailwarden_cli.options import JsonOut
from mailwarden_cli.runner import emit_json, out, run, usage
from mailwarden_cli.tail import follow, parse_since

SERVICE = "sender-svc"
FINAL = ("sent", "failed", "uncertain")
app = typer.Typer(
    help="Outgoing email: send through a mailbox, look a send up, follow outcomes.", no_args_is_help=True
)

Addresses = Annotated[
    list[str] | None, typer.Option(help="An address, or 'Name <address>'; repeat the option.")
]


def recipient(text: str) -> dict[str, str]:
    """``ann@example.org`` or ``Ann Example <ann@example.org>``."""
    text = text.strip()
    if text.endswith(">") and "<" in text:
        name, _, address = text[:-1].rpartition("<")
        return {"name": name.strip().strip('"'), "address": address.strip()}
    return {"address": text}


def attachment(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise typer.BadParameter(f"no such file: {path}", param_hint="--attach")
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    data = base64.b64encode(path.read_bytes()).decode()
    return {"filename": path.name, "content_type": content_type, "content_b64": data}


def header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise typer.BadParameter("'Name: value'", param_hint="--header")
    return name.strip(), value.strip()


def _read(path: Path | None, hint: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}", param_hint=hint) from None


def show_status(status: dict[str, Any]) -> None:
    state = status.get("status", "?")
    colour = {"sent": "green", "failed": "red", "uncertain": "yellow"}.get(state, "cyan")
    out.print(f"[bold]{status.get('mailbox_id')}[/] {status.get('idempotency_key')}: [{colour}]{state}[/]")
    if status.get("message_id"):
        out.print(f"  Message-ID {status['message_id']}  attempts {status.get('attempts', 0)}")
    sent, failed, uncertain = status.get("sent"), status.get("failed"), status.get("uncertain")
    if sent:
        out.print(f"  accepted {', '.join(sent['accepted'])}  reply {sent['reply']}", markup=False)
        for r in sent.get("refused", []):
            out.print(
                f"  refused {r['address']}: {r['reply_code']} {r.get('enhanced_code') or ''}", markup=False
            )
    if failed:
        error = failed["error"]
        out.print(f"  {error['code']} at {error['step']}: {error['message']}", markup=False)
    if uncertain:
        out.print(f"  {uncertain['reason']} (may have been sent: decide, then send again with a new key)")
    if state == "queued" and status.get("last_error"):
        out.print(f"  retrying after {status['last_error']}", markup=False)


@app.command()
def send(
    ctx: typer.Context,
    mailbox: Annotated[str, typer.Argument(help="The mailbox that sends (From is its address).")],
    to: Addresses = None,
    cc: Addresses = None,
    bcc: Addresses = None,
    subject: Annotated[str, typer.Option("--subject", "-s")] = "",
    text: Annotated[str | None, typer.Option("--text", help="The plain-text body.")] = None,
    text_file: Annotated[
        Path | None, typer.Option("--text-file", help="The plain-text body, from a file.")
    ] = None,
    html_file: Annotated[Path | None, typer.Option("--html-file", help="The HTML body, from a file.")] = None,
    attach: Annotated[
        list[Path] | None, typer.Option("--attach", "-a", help="A file to attach; repeat.")
    ] = None,
    headers: Annotated[list[str] | None, typer.Option("--header", help="'X-Name: value'; repeat.")] = None,
    in_reply_to: Annotated[str | None, typer.Option("--in-reply-to", help="<message-id> answered.")] = None,
    key: Annotated[
        str | None,
        typer.Option("--key", help="Idempotency key (default: a new one): the same key sends once."),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the outcome; exit 1 unless sent.")] = False,
    wait_s: Annotated[float, typer.Option("--wait-timeout", min=1, help="Seconds --wait waits.")] = 120.0,
    as_json: JsonOut = False,
) -> None:
    """Send one mail from MAILBOX (queued; --wait for the outcome)."""
    if text is not None and text_file is not None:
        usage("give --text or --text-file, not both")
    body_text = text if text is not None else _read(text_file, "--text-file")
    html = _read(html_file, "--html-file")
    if body_text is None and html is None:
        usage("give a body: --text, --text-file or --html-file")
    request: dict[str, Any] = {
        "mailbox_id": mailbox,
        "idempotency_key": key or f"cli-{uuid.uuid4()}",
        "to": [recipient(a) for a in to or []],
        "cc": [recipient(a) for a in cc or []],
        "bcc": [recipient(a) for a in bcc or []],
        "subject": subject,
        "attachments": [attachment(p) for p in attach or []],
        "headers": dict(header(h) for h in headers or []),
    }
    if body_text is not None:
        request["text"] = body_text
    if html is not None:
        request["html"] = html
    if in_reply_to:
        request["in_reply_to"] = in_reply_to
        request["references"] = [in_reply_to]

    async def work(bus: Bus) -> int | None:
        status: dict[str, Any] = await bus.call(SERVICE, "send", request) or {}
        if wait:
            lookup = {"mailbox_id": mailbox, "idempotency_key": request["idempotency_key"]}
            deadline = asyncio.get_running_loop().time() + wait_s
            while status.get("status") not in FINAL and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.5)
                status = await bus.call(SERVICE, "get", lookup) or {}
        if as_json:
            emit_json(status)
        else:
            show_status(status)
        return 1 if wait and status.get("status") != "sent" else None

    run(ctx, work)


@app.command()
def status(
    ctx: typer.Context,
    mailbox: Annotated[str, typer.Argument()],
    key: Annotated[str, typer.Argument(help="The idempotency key of the send.")],
    as_json: JsonOut = False,
) -> None:
    """Where one send stands, with its outcome."""

    async def work(bus: Bus) -> None:
        found = await bus.call(SERVICE, "get", {"mailbox_id": mailbox, "idempotency_key": key}) or {}
        emit_json(found) if as_json else show_status(found)

    run(ctx, work)


@app.command()
def outcomes(
    ctx: typer.Context,
    mailbox: Annotated[str | None, typer.Argument(help="One mailbox (default: all).")] = None,
    since: Since = None,
    last: Last = None,
    count: Count = None,
    as_json: JsonLines = False,
) -> None:
    """Follow EmailSent, EmailSendFailed and EmailSendUncertain as they are published (Ctrl-C stops)."""
    subject = f"mailwarden.send.*.{mailbox or '*'}"
    start = parse_since(since)
    show_json = printer(True)

    def show(msg: Msg) -> None:
        if as_json:
            show_json(msg)
            return
        body = decode(msg.data)
        data = body.get("data", {}) if isinstance(body, dict) else {}
        kind = body.get("type", "?") if isinstance(body, dict) else "?"
        mailbox_id = data.get("mailbox_id") or (data.get("mailbox") or {}).get("mailbox_id", "?")
        line = f"{body.get('occurred_at', '')}  {kind:<18} {mailbox_id}  {data.get('idempotency_key', '')}"
        if kind == "EmailSendFailed":
            line += f"  {data['error']['code']}"
        elif kind == "EmailSent":
            line += f"  {len(data.get('accepted', []))} accepted"
        out.print(line, markup=False)

    async def work(bus: Bus) -> None:
        await follow(bus, subject, show, since=start, last=last, count=count)

    run(ctx, work)
