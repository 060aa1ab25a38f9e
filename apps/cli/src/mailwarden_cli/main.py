"""The ``mailwarden`` command: global options, then one group per area.

Exit codes: 0 success, 1 a failed test or a refused or failed operation, 2 bad usage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mailwarden_cli.client import DEFAULT_TOKEN_FILE, DEFAULT_URL, Options, read_token
from mailwarden_cli.commands import alerts, audit, events, job, mail, mailbox, profile, settings, sync, token

app = typer.Typer(
    rich_markup_mode=None,
    name="mailwarden",
    help="Operate mailwarden over NATS: profiles, settings, mailboxes, jobs, alerts, events, mail and sync.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(profile.app, name="profile")
app.add_typer(settings.app, name="settings")
app.add_typer(mailbox.app, name="mailbox")
app.add_typer(job.app, name="job")
app.add_typer(sync.app, name="sync")
app.add_typer(alerts.app, name="alerts")
app.add_typer(events.app, name="events")
app.add_typer(mail.app, name="mail")
app.add_typer(token.app, name="token")
app.command(name="audit")(audit.audit)


@app.callback()
def main(
    ctx: typer.Context,
    nats_url: Annotated[
        str,
        typer.Option(
            "--nats-url", envvar=["MW_NATS_URL", "NATS_URL"], help="The NATS server every service uses."
        ),
    ] = DEFAULT_URL,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for each reply.")
    ] = 10.0,
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="MW_TOKEN", help="API token (or JWT) sent with every request."),
    ] = None,
    token_file: Annotated[
        Path,
        typer.Option(
            "--token-file", envvar="MW_TOKEN_FILE", help="Where `make up` kept the administrator token."
        ),
    ] = DEFAULT_TOKEN_FILE,
) -> None:
    """mailwarden's operator CLI."""
    ctx.obj = Options(nats_url=nats_url, timeout=timeout, token=read_token(token, token_file))
