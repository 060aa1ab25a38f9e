"""``mailwarden settings``: the organisation's email settings (profile-svc)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from contracts.models import DeliveryMethod
from mailwarden_cli import render
from mailwarden_cli.client import Bus
from mailwarden_cli.options import JsonOut, csv_list, prune
from mailwarden_cli.runner import emit_json, out, run

SERVICE = "profile-svc"
# what settings_put accepts; the view adds version and updated_at, which are not ours to send
WRITABLE = (
    "default_profile_id",
    "incoming_delivery",
    "outgoing_delivery",
    "act_delivery",
    "approved_users_only",
    "approved_queues_only",
    "alert_levels",
    "notify_mailbox_owner",
    "port_preset",
    "allowed_ports",
    "retest_interval_s",
)
app = typer.Typer(
    rich_markup_mode=None,
    help="Organisation email settings: defaults, approval, alert levels, ports.",
    no_args_is_help=True,
)

Delivery = Annotated[DeliveryMethod | None, typer.Option()]


@app.command()
def show(ctx: typer.Context, as_json: JsonOut = False) -> None:
    """Show the settings."""

    async def work(bus: Bus) -> None:
        current = await bus.call(SERVICE, "settings_get")
        if as_json:
            emit_json(current)
        else:
            out.print(render.settings_view(current))

    run(ctx, work)


def _ports(text: str | None) -> list[int] | None:
    items = csv_list(text)
    if items is None:
        return None
    try:
        return [int(p) for p in items]
    except ValueError:
        raise typer.BadParameter(
            "a comma-separated list of port numbers", param_hint="--allowed-ports"
        ) from None


@app.command("set")
def set_(
    ctx: typer.Context,
    default_profile: Annotated[
        str | None, typer.Option("--default-profile", help="Default profile id.")
    ] = None,
    no_default_profile: Annotated[
        bool, typer.Option("--no-default-profile", help="Clear the default.")
    ] = False,
    incoming_delivery: Delivery = None,
    outgoing_delivery: Delivery = None,
    act_delivery: Delivery = None,
    approved_users_only: Annotated[bool | None, typer.Option("--approved-users-only/--any-users")] = None,
    approved_queues_only: Annotated[bool | None, typer.Option("--approved-queues-only/--any-queues")] = None,
    alert_levels: Annotated[
        str | None, typer.Option("--alert-levels", help="Comma list of error,warning,information.")
    ] = None,
    notify_owner: Annotated[
        bool | None, typer.Option("--notify-mailbox-owner/--no-notify-mailbox-owner")
    ] = None,
    port_preset: Annotated[str | None, typer.Option("--port-preset", help="A named port allow-list.")] = None,
    allowed_ports: Annotated[
        str | None, typer.Option("--allowed-ports", help="Comma list of ports (sets the preset to custom).")
    ] = None,
    retest_interval_s: Annotated[
        int | None,
        typer.Option("--retest-interval-s", help="Re-test mailboxes no sync watches this often (0: never)."),
    ] = None,
    as_json: JsonOut = False,
) -> None:
    """Change some settings; the others keep their current values."""
    ports = _ports(allowed_ports)
    changes = prune(
        {
            "default_profile_id": default_profile,
            "incoming_delivery": incoming_delivery.value if incoming_delivery else None,
            "outgoing_delivery": outgoing_delivery.value if outgoing_delivery else None,
            "act_delivery": act_delivery.value if act_delivery else None,
            "approved_users_only": approved_users_only,
            "approved_queues_only": approved_queues_only,
            "alert_levels": csv_list(alert_levels),
            "notify_mailbox_owner": notify_owner,
            "port_preset": "custom" if ports is not None else port_preset,
            "allowed_ports": ports,
            "retest_interval_s": retest_interval_s,
        }
    )
    if no_default_profile:
        if default_profile:
            raise typer.BadParameter("--default-profile and --no-default-profile exclude each other")
        changes["default_profile_id"] = None
    if not changes:
        raise typer.BadParameter("give at least one setting to change")

    async def work(bus: Bus) -> None:
        current = await bus.call(SERVICE, "settings_get")
        body: dict[str, Any] = {k: v for k, v in current.items() if k in WRITABLE}
        body.update(changes)
        if body.get("port_preset") != "custom":
            body.pop("allowed_ports", None)  # the list follows the named preset
        result = await bus.call(SERVICE, "settings_put", body)
        if as_json:
            emit_json(result)
        else:
            out.print(render.settings_view(result))

    run(ctx, work)
