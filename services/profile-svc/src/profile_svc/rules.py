"""What a saved profile must satisfy, on create and on update alike.

A request is first merged with the stored profile into a :class:`Raw` form, then :func:`resolve`
fills the derived values ("use same settings for outgoing", default ports) and checks the rules that
tie fields together. Every broken rule becomes a problem naming its field; nothing is half-applied.

"Use same settings for outgoing" means: the outgoing (SMTP) host is the incoming host, the outgoing
TLS mode is the incoming TLS mode (implicit TLS → SMTPS, STARTTLS → submission with STARTTLS, none →
plain), the outgoing port defaults to that mode's SMTP port (465, 587, 25) unless given, and the
profile's login (credential_source "profile") is used for both directions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from contracts.events import AdvancedOptions
from contracts.models import CredentialSource, Direction, Endpoint, IncomingProtocol, Owner, TlsMode
from mailwarden_runtime.http import FieldProblem
from profile_svc.credentials import Login
from profile_svc.models import ProfileCreate, ProfilePatch
from profile_svc.ports import default_port, refusal, service_of


@dataclass
class Raw:
    """A profile as requested, before derived values are filled in (``None`` = derive it)."""

    name: str
    description: str
    owner: Owner
    incoming_protocol: IncomingProtocol
    in_host: str
    in_port: int | None
    in_tls: TlsMode
    use_same: bool
    out_host: str | None
    out_port: int | None
    out_tls: TlsMode | None
    credential_source: CredentialSource
    advanced: dict[str, Any]
    is_default: bool
    new_logins: dict[Direction, Login] = field(default_factory=dict)
    stored_logins: set[Direction] = field(default_factory=set)


@dataclass
class Draft:
    """A profile ready to be saved; ``new_logins`` are sealed on save, ``keep_logins`` stay as stored."""

    name: str
    description: str
    owner: Owner
    incoming_protocol: IncomingProtocol
    incoming: Endpoint
    outgoing: Endpoint
    use_same: bool
    credential_source: CredentialSource
    advanced: AdvancedOptions
    is_default: bool
    new_logins: dict[Direction, Login]
    keep_logins: set[Direction]


def raw_from_create(body: ProfileCreate) -> Raw:
    out = body.outgoing
    creds = body.credentials
    logins = {} if creds is None else _given_logins(creds.incoming, creds.outgoing)
    return Raw(
        name=body.name,
        description=body.description,
        owner=body.owner,
        incoming_protocol=body.incoming_protocol,
        in_host=body.incoming.host,
        in_port=body.incoming.port,
        in_tls=body.incoming.tls,
        use_same=body.use_same_settings_for_outgoing,
        out_host=out.host if out else None,
        out_port=out.port if out else None,
        out_tls=out.tls if out else None,
        credential_source=body.credential_source,
        advanced=body.advanced.model_dump(),
        is_default=body.is_default,
        new_logins=logins,
    )


def raw_from_patch(doc: dict[str, Any], patch: ProfilePatch, is_default: bool) -> Raw:
    """Merge a PATCH into the stored profile; a port that was the default follows a changed TLS mode."""
    old_proto = IncomingProtocol(doc["incoming_protocol"])
    old_in = Endpoint.model_validate(doc["incoming"])
    old_out = Endpoint.model_validate(doc["outgoing"])
    proto = patch.incoming_protocol or old_proto
    inc = patch.incoming
    in_tls = (inc.tls if inc else None) or old_in.tls
    in_port: int | None = inc.port if inc and inc.port else old_in.port
    if not (inc and inc.port) and old_in.port == default_port(service_of(old_proto), old_in.tls):
        in_port = None
    use_same = (
        doc["use_same_settings_for_outgoing"]
        if patch.use_same_settings_for_outgoing is None
        else (patch.use_same_settings_for_outgoing)
    )
    out = patch.outgoing
    out_tls = out.tls if out and out.tls else (None if use_same else old_out.tls)
    out_host = out.host if out and out.host else (None if use_same else old_out.host)
    out_port: int | None = out.port if out and out.port else old_out.port
    if not (out and out.port) and old_out.port == default_port("smtp", old_out.tls):
        out_port = None
    advanced = dict(doc.get("advanced") or {})
    if patch.advanced is not None:
        advanced.update(patch.advanced.model_dump(exclude_unset=True, exclude_none=True))
    creds = patch.credentials
    return Raw(
        name=patch.name if patch.name is not None else doc["name"],
        description=patch.description if patch.description is not None else doc.get("description", ""),
        owner=patch.owner or Owner.model_validate(doc["owner"]),
        incoming_protocol=proto,
        in_host=(inc.host if inc and inc.host else None) or old_in.host,
        in_port=in_port,
        in_tls=in_tls,
        use_same=use_same,
        out_host=out_host,
        out_port=out_port,
        out_tls=out_tls,
        credential_source=patch.credential_source or CredentialSource(doc["credential_source"]),
        advanced=advanced,
        is_default=is_default if patch.is_default is None else patch.is_default,
        new_logins={} if creds is None else _given_logins(creds.incoming, creds.outgoing),
        stored_logins={Direction(d) for d in (doc.get("credentials") or {})},
    )


def _given_logins(incoming: Login | None, outgoing: Login | None) -> dict[Direction, Login]:
    given = {Direction.INCOMING: incoming, Direction.OUTGOING: outgoing}
    return {d: login for d, login in given.items() if login is not None}


def resolve(raw: Raw) -> tuple[Draft, list[FieldProblem]]:
    """Fill derived values and check the cross-field rules; the draft is only usable without problems."""
    problems: list[FieldProblem] = []

    def bad(name: str, message: str) -> None:
        problems.append(FieldProblem(field=name, message=message))

    service = service_of(raw.incoming_protocol)
    incoming = Endpoint(
        host=raw.in_host, port=raw.in_port or default_port(service, raw.in_tls), tls=raw.in_tls
    )
    out_host, out_tls = raw.out_host, raw.out_tls
    if raw.use_same:
        if out_host is not None and out_host != incoming.host:
            bad(
                "outgoing.host",
                "must be the incoming host (or omitted) when use_same_settings_for_outgoing is true",
            )
        if out_tls is not None and out_tls is not incoming.tls:
            bad(
                "outgoing.tls",
                "must be the incoming TLS mode (or omitted) when use_same_settings_for_outgoing is true",
            )
        out_host, out_tls = incoming.host, incoming.tls
    elif out_host is None:
        bad("outgoing.host", "is required when use_same_settings_for_outgoing is false")
    out_tls = out_tls or TlsMode.IMPLICIT
    outgoing = Endpoint(
        host=out_host or incoming.host, port=raw.out_port or default_port("smtp", out_tls), tls=out_tls
    )

    adv = dict(raw.advanced)
    if adv.get("verify_tls", True):
        adv["tls_verification_exception"] = None
    elif not adv.get("tls_verification_exception"):
        bad(
            "advanced.tls_verification_exception",
            "is required when verify_tls is false: record why skipping certificate checks is acceptable",
        )
    advanced = AdvancedOptions.model_validate(adv)
    for side, endpoint in (("incoming", incoming), ("outgoing", outgoing)):
        if endpoint.tls is TlsMode.NONE and not advanced.allow_plaintext_auth:
            bad(
                f"{side}.tls",
                '"none" sends passwords in clear: use implicit TLS or STARTTLS, '
                "or set advanced.allow_plaintext_auth explicitly",
            )

    new_logins = dict(raw.new_logins)
    keep: set[Direction] = set()
    if raw.credential_source is CredentialSource.MAILBOX:
        if new_logins:
            bad("credentials", 'are only stored on the profile with credential_source "profile"')
        new_logins = {}
    else:
        if Direction.INCOMING not in new_logins:
            if Direction.INCOMING in raw.stored_logins:
                keep.add(Direction.INCOMING)
            else:
                bad("credentials.incoming", 'is required with credential_source "profile"')
        if raw.use_same:
            if Direction.OUTGOING in new_logins:
                bad(
                    "credentials.outgoing",
                    "must be omitted: with use_same_settings_for_outgoing the incoming login is used",
                )
        elif Direction.OUTGOING not in new_logins:
            if Direction.OUTGOING in raw.stored_logins:
                keep.add(Direction.OUTGOING)
            else:
                bad(
                    "credentials.outgoing",
                    'is required with credential_source "profile" and separate outgoing settings',
                )

    draft = Draft(
        name=raw.name,
        description=raw.description,
        owner=raw.owner,
        incoming_protocol=raw.incoming_protocol,
        incoming=incoming,
        outgoing=outgoing,
        use_same=raw.use_same,
        credential_source=raw.credential_source,
        advanced=advanced,
        is_default=raw.is_default,
        new_logins=new_logins,
        keep_logins=keep,
    )
    return draft, problems


def port_problems(draft: Draft, allowed: list[int]) -> list[FieldProblem]:
    """The organisation's allow-list, checked when a profile is saved, with the port to use instead."""
    problems = []
    checks = (
        ("incoming.port", service_of(draft.incoming_protocol), draft.incoming),
        ("outgoing.port", service_of(None), draft.outgoing),
    )
    for name, service, endpoint in checks:
        message = refusal(service, endpoint.port, endpoint.tls, allowed)
        if message:
            problems.append(FieldProblem(field=name, message=message))
    return problems
