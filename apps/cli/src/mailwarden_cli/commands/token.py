"""``mailwarden token``: API tokens for integrations and people (tokens:manage, on profile-svc)."""

from __future__ import annotations

from typing import Annotated

import typer

from mailwarden_cli.client import Bus
from mailwarden_cli.options import JsonOut, csv_list
from mailwarden_cli.runner import emit_json, out, run

SERVICE = "profile-svc"
app = typer.Typer(help="API tokens: create (shown once), list, revoke.", no_args_is_help=True)


@app.command()
def create(
    ctx: typer.Context,
    subject: Annotated[str, typer.Argument(help="Who the token stands for (an integration or a user id).")],
    roles: Annotated[str, typer.Option(help="Comma-separated roles, e.g. integration or mailbox_owner.")],
    mailboxes: Annotated[str | None, typer.Option(help="Comma-separated mailbox ids it is granted.")] = None,
    scopes: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated permissions it is limited to, e.g. mailboxes:read,mailboxes:write."
        ),
    ] = None,
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
    ttl_days: Annotated[int, typer.Option(min=1, max=730, help="Days until it expires.")] = 90,
    as_json: JsonOut = False,
) -> None:
    """Create a token; its secret is printed this once."""

    async def work(bus: Bus) -> None:
        body = {
            "subject": subject,
            "roles": csv_list(roles) or [],
            "mailboxes": csv_list(mailboxes) or [],
            "scopes": csv_list(scopes) or [],
            "description": description,
            "ttl_days": ttl_days,
        }
        created = await bus.call(SERVICE, "tokens_create", body)
        if as_json:
            emit_json(created)
        else:
            out.print(f"token {created['token_id']} for {created['subject']} until {created['expires_at']}:")
            out.print(created["token"], soft_wrap=True)

    run(ctx, work)


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOut = False) -> None:
    """List tokens (never their secrets)."""

    async def work(bus: Bus) -> None:
        page = await bus.call(SERVICE, "tokens_list")
        if as_json:
            emit_json(page)
            return
        for t in page["items"]:
            out.print(
                f"{t['token_id']}  {t['state']:<8} {t['subject']:<24} {','.join(t['roles']):<28} "
                f"expires {t['expires_at']}"
            )

    run(ctx, work)


@app.command()
def revoke(ctx: typer.Context, token_id: str, as_json: JsonOut = False) -> None:
    """Revoke a token: every service refuses it within seconds."""

    async def work(bus: Bus) -> None:
        revoked = await bus.call(SERVICE, "tokens_revoke", {"token_id": token_id})
        if as_json:
            emit_json(revoked)
        else:
            out.print(f"revoked {revoked['token_id']} ({revoked['subject']})")

    run(ctx, work)
