"""What a saved profile must satisfy, on create and on update alike.

A create request, or the stored profile as a request with a PATCH applied (:func:`requested`), goes
to :func:`resolve`, which fills the derived values ("use same settings for outgoing", default ports) and checks the rules that
tie fields together. Every broken rule becomes a problem naming its field; nothing is half-applied.

"Use same settings for outgoing" means: the outgoing (SMTP) host is the incoming host, the outgoing
TLS mode is the incoming TLS mode (implicit TLS → SMTPS, STARTTLS → submission with STARTTLS, none →
plain), the outgoing port defaults to that mode's SMTP port (465, 587, 25) unless given, and the
profile's login (credential_source "profile") is used for both directions.
"""

from __future__ import annotations

from collections.abc import Collection

from contracts.events import AdvancedOptions, ProfileBasics
from contracts.models import CredentialSource, Direction, Endpoint, IncomingProtocol, TlsMode
from mailwarden_runtime.documents import patched
from mailwarden_runtime.http import FieldProblem
from profile_svc.credentials import Login
from profile_svc.models import CredentialsIn, OutgoingIn, ProfileCreate, ProfilePatch
from profile_svc.ports import default_port, refusal, service_of


class Draft(ProfileBasics):
    """A profile ready to be saved; ``new_logins`` are sealed on save, ``keep_logins`` stay as stored."""

    is_default: bool
    new_logins: dict[Direction, Login]
    keep_logins: set[Direction]


def requested(stored: ProfileCreate, patch: ProfilePatch) -> ProfileCreate:
    """The stored profile as a request with ``patch`` applied: what a PATCH asks to save.

    Fields the patch sets replace the stored ones (``null`` counts as not sent), nested ones field by
    field. With "use same settings for outgoing" the outgoing host and TLS mode follow the incoming
    side unless the patch names them.
    """
    merged = patched(stored, patch)
    sent = patch.outgoing.model_fields_set if patch.outgoing is not None else set()
    if merged.use_same_settings_for_outgoing and merged.outgoing is not None:
        kept = {k: None for k in ("host", "tls") if k not in sent}
        merged = merged.model_copy(update={"outgoing": merged.outgoing.model_copy(update=kept)})
    return merged


def _given_logins(credentials: CredentialsIn | None) -> dict[Direction, Login]:
    if credentials is None:
        return {}
    given = {Direction.INCOMING: credentials.incoming, Direction.OUTGOING: credentials.outgoing}
    return {d: login for d, login in given.items() if login is not None}


def resolve(
    req: ProfileCreate, stored_logins: Collection[Direction] = ()
) -> tuple[Draft, list[FieldProblem]]:
    """Fill derived values and check the cross-field rules; the draft is only usable without problems.

    ``stored_logins``: the directions whose login is stored already (kept when none is given).
    """
    problems: list[FieldProblem] = []

    def bad(name: str, message: str) -> None:
        problems.append(FieldProblem(field=name, message=message))

    service = service_of(req.incoming_protocol)
    inc, out = req.incoming, req.outgoing or OutgoingIn()
    incoming = Endpoint(host=inc.host, port=inc.port or default_port(service, inc.tls), tls=inc.tls)
    out_host, out_tls = out.host, out.tls
    if req.use_same_settings_for_outgoing:
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
        host=out_host or incoming.host, port=out.port or default_port("smtp", out_tls), tls=out_tls
    )

    adv = req.advanced.model_dump()
    if adv.get("verify_tls", True):
        adv["tls_verification_exception"] = None
    elif not adv.get("tls_verification_exception"):
        bad(
            "advanced.tls_verification_exception",
            "is required when verify_tls is false: record why skipping certificate checks is acceptable",
        )
    advanced = AdvancedOptions.model_validate(adv)
    if advanced.save_sent_copy and req.incoming_protocol is not IncomingProtocol.IMAP:
        bad("advanced.save_sent_copy", "needs an IMAP incoming server: POP3 has no Sent folder")
    for side, endpoint in (("incoming", incoming), ("outgoing", outgoing)):
        if endpoint.tls is TlsMode.NONE and not advanced.allow_plaintext_auth:
            bad(
                f"{side}.tls",
                '"none" sends passwords in clear: use implicit TLS or STARTTLS, '
                "or set advanced.allow_plaintext_auth explicitly",
            )

    new_logins = _given_logins(req.credentials)
    keep: set[Direction] = set()
    if req.credential_source is CredentialSource.MAILBOX:
        if new_logins:
            bad("credentials", 'are only stored on the profile with credential_source "profile"')
        new_logins = {}
    else:
        if Direction.INCOMING not in new_logins:
            if Direction.INCOMING in stored_logins:
                keep.add(Direction.INCOMING)
            else:
                bad("credentials.incoming", 'is required with credential_source "profile"')
        if req.use_same_settings_for_outgoing:
            if Direction.OUTGOING in new_logins:
                bad(
                    "credentials.outgoing",
                    "must be omitted: with use_same_settings_for_outgoing the incoming login is used",
                )
        elif Direction.OUTGOING not in new_logins:
            if Direction.OUTGOING in stored_logins:
                keep.add(Direction.OUTGOING)
            else:
                bad(
                    "credentials.outgoing",
                    'is required with credential_source "profile" and separate outgoing settings',
                )

    draft = Draft(
        name=req.name,
        description=req.description,
        owner=req.owner,
        incoming_protocol=req.incoming_protocol,
        incoming=incoming,
        outgoing=outgoing,
        use_same_settings_for_outgoing=req.use_same_settings_for_outgoing,
        credential_source=req.credential_source,
        advanced=advanced,
        is_default=req.is_default,
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
