"""``mailwarden audit``: who changed what and when (profile-svc reads the events' actors back)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mailwarden_cli.client import Bus
from mailwarden_cli.options import JsonOut
from mailwarden_cli.runner import emit_json, out, run

SERVICE = "profile-svc"


def audit(
    ctx: typer.Context,
    actor: Annotated[str | None, typer.Option(help="Only this actor, e.g. token:crm or jwt:u42.")] = None,
    since_hours: Annotated[float, typer.Option(min=0.01, help="How far back to look.")] = 168.0,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Most entries shown, newest first.")] = 100,
    as_json: JsonOut = False,
) -> None:
    """List changes with their actor (the token's subject), newest first."""

    async def work(bus: Bus) -> None:
        query: dict[str, Any] = {"since_hours": since_hours, "limit": limit}
        if actor:
            query["actor"] = actor
        page = await bus.call(SERVICE, "audit", query)
        if as_json:
            emit_json(page)
            return
        for item in page["items"]:
            ids = " ".join(f"{k}={v}" for k, v in sorted(item["ids"].items()))
            out.print(f"{item['at']}  {item['actor']:<28} {item['event']:<24} {ids}")
        if not page["items"]:
            out.print("no changes by a caller in that time")

    run(ctx, work)
