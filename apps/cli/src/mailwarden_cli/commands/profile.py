"""``mailwarden profile``: email server profiles (profile-svc)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from contracts.models import CredentialSource, IncomingProtocol, TlsMode
from mailwarden_cli import render
from mailwarden_cli.client import Bus
from mailwarden_cli.options import (
    SMTP_MODES,
    FromJson,
    JsonOut,
    OwnerEmailOpt,
    OwnerIdOpt,
    OwnerKindOpt,
    OwnerNameOpt,
    Quiet,
    SmtpModeChoice,
    merge,
    owner,
    prune,
    read_json,
)
from mailwarden_cli.runner import emit_json, out, run

SERVICE = "profile-svc"
app = typer.Typer(
    rich_markup_mode=None,
    help="Email server profiles: where and how mailboxes connect.",
    no_args_is_help=True,
)

ProfileId = Annotated[str, typer.Argument(help="The profile id.")]
Protocol = Annotated[IncomingProtocol | None, typer.Option("--protocol", help="Incoming protocol.")]
Host = Annotated[str | None, typer.Option("--host", help="Incoming server host name or address.")]
Port = Annotated[int | None, typer.Option("--port", help="Incoming port (default: by protocol and TLS).")]
Tls = Annotated[TlsMode | None, typer.Option("--tls", help="Incoming TLS mode.")]
SmtpHost = Annotated[str | None, typer.Option("--smtp-host", help="Outgoing (SMTP) host; default: incoming.")]
SmtpPort = Annotated[int | None, typer.Option("--smtp-port", help="Outgoing (SMTP) port.")]
SmtpTls = Annotated[TlsMode | None, typer.Option("--smtp-tls", help="Outgoing TLS mode.")]
Source = Annotated[
    CredentialSource | None,
    typer.Option("--credential-source", help="Logins from each mailbox or the profile."),
]
User = Annotated[str | None, typer.Option("--username", help="Profile login (credential source profile).")]
Password = Annotated[
    str | None, typer.Option("--password", envvar="MW_PROFILE_PASSWORD", help="Profile password.")
]
Description = Annotated[str | None, typer.Option("--description")]
VerifyTls = Annotated[
    bool | None, typer.Option("--verify-tls/--no-verify-tls", help="Check server certificates.")
]
TlsException = Annotated[
    str | None, typer.Option("--tls-exception", help="Why not verifying TLS is acceptable (10-500 chars).")
]
Plaintext = Annotated[
    bool | None, typer.Option("--allow-plaintext-auth/--no-plaintext-auth", help="Allow login without TLS.")
]
ConnectTimeout = Annotated[float | None, typer.Option("--connect-timeout", help="Seconds.")]
MaxConnections = Annotated[int | None, typer.Option("--max-connections")]
SmtpModeOpt = Annotated[
    SmtpModeChoice | None,
    typer.Option("--smtp-mode", help=f"The outgoing test's default for its mailboxes. {SMTP_MODES}"),
]


def _body(
    *,
    name: str | None,
    description: str | None,
    owner_obj: dict[str, Any] | None,
    protocol: IncomingProtocol | None,
    host: str | None,
    port: int | None,
    tls: TlsMode | None,
    smtp_host: str | None,
    smtp_port: int | None,
    smtp_tls: TlsMode | None,
    source: CredentialSource | None,
    username: str | None,
    password: str | None,
    default: bool | None,
    verify_tls: bool | None,
    tls_exception: str | None,
    plaintext: bool | None,
    connect_timeout: float | None,
    max_connections: int | None,
    smtp_mode: SmtpModeChoice | None = None,
) -> dict[str, Any]:
    """The request body from the options given; what was not given is not sent."""
    separate = smtp_host is not None or smtp_tls is not None
    login = {"username": username, "password": password} if username or password else None
    body = {
        "name": name,
        "description": description,
        "owner": owner_obj,
        "incoming_protocol": protocol.value if protocol else None,
        "incoming": {"host": host, "port": port, "tls": tls.value if tls else None},
        "use_same_settings_for_outgoing": False if separate else None,
        "outgoing": {"host": smtp_host, "port": smtp_port, "tls": smtp_tls.value if smtp_tls else None},
        "credential_source": source.value if source else None,
        "credentials": {"incoming": login, "outgoing": login} if login else None,
        "is_default": default,
        "advanced": {
            "verify_tls": verify_tls,
            "tls_verification_exception": tls_exception,
            "allow_plaintext_auth": plaintext,
            "connect_timeout_s": connect_timeout,
            "max_concurrent_connections": max_connections,
            "smtp_mode": smtp_mode.value if smtp_mode else None,
        },
    }
    result: dict[str, Any] = prune(body)
    return result


def _show(profile: dict[str, Any], as_json: bool, quiet: bool = False) -> None:
    if quiet:
        out.print(profile["profile_id"])
    elif as_json:
        emit_json(profile)
    else:
        out.print(render.profile_view(profile))


@app.command()
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Unique profile name.")],
    owner_id: Annotated[str, typer.Option("--owner-id", help="Profile owner (gets profile-wide alerts).")],
    protocol: Annotated[IncomingProtocol, typer.Option("--protocol", help="Incoming protocol.")],
    host: Annotated[str, typer.Option("--host", help="Incoming server host name or address.")],
    port: Port = None,
    tls: Tls = None,
    smtp_host: SmtpHost = None,
    smtp_port: SmtpPort = None,
    smtp_tls: SmtpTls = None,
    owner_kind: OwnerKindOpt = None,
    owner_name: OwnerNameOpt = None,
    owner_email: OwnerEmailOpt = None,
    description: Description = None,
    source: Source = None,
    username: User = None,
    password: Password = None,
    default: Annotated[bool, typer.Option("--default", help="Make it the organisation's default.")] = False,
    verify_tls: VerifyTls = None,
    tls_exception: TlsException = None,
    plaintext: Plaintext = None,
    connect_timeout: ConnectTimeout = None,
    max_connections: MaxConnections = None,
    smtp_mode: SmtpModeOpt = None,
    from_json: FromJson = None,
    as_json: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """Create a profile."""
    extra = read_json(from_json)
    body = _body(
        name=name,
        description=description,
        owner_obj=owner(owner_kind, owner_id, owner_name, owner_email),
        protocol=protocol,
        host=host,
        port=port,
        tls=tls,
        smtp_host=smtp_host,
        smtp_port=smtp_port,
        smtp_tls=smtp_tls,
        source=source,
        username=username,
        password=password,
        default=default or None,
        verify_tls=verify_tls,
        tls_exception=tls_exception,
        plaintext=plaintext,
        connect_timeout=connect_timeout,
        max_connections=max_connections,
        smtp_mode=smtp_mode,
    )

    async def work(bus: Bus) -> None:
        _show(await bus.call(SERVICE, "create", merge(extra, body)), as_json, quiet)

    run(ctx, work)


@app.command("list")
def list_(
    ctx: typer.Context,
    name_contains: Annotated[str | None, typer.Option("--name-contains")] = None,
    owner_id: Annotated[str | None, typer.Option("--owner-id")] = None,
    protocol: Protocol = None,
    limit: Annotated[int, typer.Option("--limit")] = 50,
    offset: Annotated[int, typer.Option("--offset")] = 0,
    as_json: JsonOut = False,
    quiet: Quiet = False,
) -> None:
    """List profiles (-q: only their ids, one a line, for scripts)."""
    query = prune(
        {
            "name_contains": name_contains,
            "owner_id": owner_id,
            "incoming_protocol": protocol.value if protocol else None,
            "limit": limit,
            "offset": offset,
        }
    )

    async def work(bus: Bus) -> None:
        page = await bus.call(SERVICE, "list", query)
        if quiet:
            for item in page["items"]:
                out.print(item["profile_id"])
        elif as_json:
            emit_json(page)
        else:
            out.print(render.profiles_table(page["items"]))

    run(ctx, work)


@app.command()
def show(ctx: typer.Context, profile_id: ProfileId, as_json: JsonOut = False) -> None:
    """Show one profile (secrets never: only whether they are set)."""

    async def work(bus: Bus) -> None:
        _show(await bus.call(SERVICE, "get", {"profile_id": profile_id}), as_json)

    run(ctx, work)


@app.command()
def update(
    ctx: typer.Context,
    profile_id: ProfileId,
    name: Annotated[str | None, typer.Option("--name")] = None,
    protocol: Protocol = None,
    host: Host = None,
    port: Port = None,
    tls: Tls = None,
    smtp_host: SmtpHost = None,
    smtp_port: SmtpPort = None,
    smtp_tls: SmtpTls = None,
    owner_kind: OwnerKindOpt = None,
    owner_id: OwnerIdOpt = None,
    owner_name: OwnerNameOpt = None,
    owner_email: OwnerEmailOpt = None,
    description: Description = None,
    source: Source = None,
    username: User = None,
    password: Password = None,
    default: Annotated[bool | None, typer.Option("--default/--not-default")] = None,
    verify_tls: VerifyTls = None,
    tls_exception: TlsException = None,
    plaintext: Plaintext = None,
    connect_timeout: ConnectTimeout = None,
    max_connections: MaxConnections = None,
    smtp_mode: SmtpModeOpt = None,
    from_json: FromJson = None,
    as_json: JsonOut = False,
) -> None:
    """Change some fields of a profile; what is not given is kept (secrets included)."""
    extra = read_json(from_json)
    body = _body(
        name=name,
        description=description,
        owner_obj=owner(owner_kind, owner_id, owner_name, owner_email),
        protocol=protocol,
        host=host,
        port=port,
        tls=tls,
        smtp_host=smtp_host,
        smtp_port=smtp_port,
        smtp_tls=smtp_tls,
        source=source,
        username=username,
        password=password,
        default=default,
        verify_tls=verify_tls,
        tls_exception=tls_exception,
        plaintext=plaintext,
        connect_timeout=connect_timeout,
        max_connections=max_connections,
        smtp_mode=smtp_mode,
    )
    if not body and not extra:
        raise typer.BadParameter("give at least one field to change")

    async def work(bus: Bus) -> None:
        request = {**merge(extra, body), "profile_id": profile_id}
        _show(await bus.call(SERVICE, "update", request), as_json)

    run(ctx, work)


@app.command()
def delete(ctx: typer.Context, profile_id: ProfileId, as_json: JsonOut = False) -> None:
    """Delete a profile that no mailbox uses."""

    async def work(bus: Bus) -> None:
        result = await bus.call(SERVICE, "delete", {"profile_id": profile_id})
        if as_json:
            emit_json(result)
        else:
            out.print(f"deleted profile {profile_id}")

    run(ctx, work)
