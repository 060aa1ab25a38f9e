"""Logins for the services that connect with them: sync-svc (incoming) and sender-svc (outgoing).

They no longer reuse the login sealed into a test (bound to that one test). They ask here, with a
service token granting ``credentials:use`` (no human role holds it), and get the login sealed to
the purpose, mailbox, direction and the profile's current host and port, for a short time. A
login entered for another server is refused as for Test & Enable (409 ``credentials_redirected``).
One exception to "each service its own direction": sender-svc gets the incoming login for purpose
``sent_copy`` (IMAP APPEND of a sent mail to the Sent folder), and only while the mailbox's profile
has ``save_sent_copy`` on; for any other purpose, or with the option off, it is refused (403).
"""

from __future__ import annotations

from datetime import timedelta

from mailbox_svc.clock import utcnow
from mailbox_svc.credentials import (
    CredentialsRedirected,
    CredentialsUnreadable,
    NoLogin,
    login_for_use,
)
from mailbox_svc.models import LoginRequest, SealedLogin
from mailbox_svc.profiles import UNAVAILABLE, ProfileDirectory, ProfileUnavailable
from mailbox_svc.store.mailboxes import MailboxStore
from mailbox_svc.testing import REDIRECTED, Rings, target_of
from mailwarden_runtime.auth import current_principal
from mailwarden_runtime.auth.service_tokens import SERVICE_DIRECTIONS
from mailwarden_runtime.http import DomainError

PURPOSE_DIRECTION = {"sync": "incoming", "send": "outgoing", "sent_copy": "incoming"}
SENT_COPY_SERVICE = "sender-svc"
"""The one service that may ask for an incoming login, for purpose ``sent_copy``."""


def _admit(req: LoginRequest) -> None:
    """Each service gets only its own direction and purpose (sync-svc incoming, sender-svc outgoing),
    but sender-svc also the incoming one for ``sent_copy`` (the profile's option is checked later)."""
    principal = current_principal()
    service = (principal.subject.removeprefix("service:") if principal is not None else "") or ""
    if PURPOSE_DIRECTION[req.purpose] != req.direction:
        raise DomainError(
            422, f"purpose {req.purpose} is for {PURPOSE_DIRECTION[req.purpose]} logins", "direction"
        )
    if req.purpose == "sent_copy":
        if service != SENT_COPY_SERVICE:
            raise DomainError(403, f"{service or 'this caller'} may not copy sent mail", "purpose")
        return
    if SERVICE_DIRECTIONS.get(service) != req.direction:
        raise DomainError(403, f"{service or 'this caller'} may not use {req.direction} logins", "direction")


async def login_for(
    mailboxes: MailboxStore, profiles: ProfileDirectory, rings: Rings, req: LoginRequest, ttl_s: float
) -> SealedLogin:
    _admit(req)
    doc = await mailboxes.get(req.mailbox_id)
    if doc is None:
        raise DomainError(404, "no such mailbox", "mailbox_id")
    if not doc.active:
        raise DomainError(409, "the mailbox is deactivated", "mailbox_id")
    if not doc.profile_id:
        raise DomainError(409, "the mailbox has no email server profile", "profile_id")
    try:
        profile = await profiles.find(doc.profile_id, with_login=True)
    except ProfileUnavailable:
        raise DomainError(503, UNAVAILABLE, "profile_id") from None
    if profile is None:
        raise DomainError(409, "the mailbox's email server profile does not exist", "profile_id")
    if req.purpose == "sent_copy" and not profile.advanced.save_sent_copy:
        raise DomainError(403, "the mailbox's profile does not save sent copies", "purpose")
    not_after = utcnow() + timedelta(seconds=ttl_s)
    try:
        sealed, endpoint = login_for_use(
            rings.at_rest,
            rings.transit,
            doc,
            profile,
            target_of(profile),
            req.direction,
            purpose=req.purpose,
            not_after=not_after,
        )
    except NoLogin:
        raise DomainError(409, f"the mailbox has no {req.direction} login", "credentials") from None
    except CredentialsUnreadable:
        raise DomainError(409, "the stored password cannot be read: enter it again", "credentials") from None
    except CredentialsRedirected:
        raise DomainError(409, REDIRECTED, "credentials") from None
    return SealedLogin(
        mailbox_id=req.mailbox_id,
        direction=req.direction,
        purpose=req.purpose,
        host=endpoint.host,
        port=endpoint.port,
        not_after=not_after.replace(microsecond=0),
        sealed=sealed,
    )
