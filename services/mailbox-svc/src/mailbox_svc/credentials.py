"""Credentials at rest and on the bus: sealed to one mailbox and direction, opened only to re-seal.

At rest a login is ``KeyRing.seal(json{"username","password"}, "mailbox:<id>:<direction>")`` with the
credential ring, so a ciphertext copied to another mailbox or direction never opens; beside it the
login records the destination it was entered for. For a test it is opened only if the profile
still points where it did, and sealed with the transit ring to that test, direction, host and port.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, SecretStr

from contracts.events import ProfileSnapshot, SealedCredentials
from contracts.models import CredentialSource, Direction, Endpoint, SealedSecret, ServerTarget
from mailwarden_runtime.crypto import KeyRing, SealError
from mailwarden_runtime.sealing import destination_fingerprint, seal_for_test, seal_for_use

if TYPE_CHECKING:
    from mailbox_svc.documents import MailboxDoc

INCOMING = Direction.INCOMING.value
OUTGOING = Direction.OUTGOING.value


class CredentialsUnreadable(Exception):
    """A stored ciphertext does not open (unknown key, tampered, or bound to another mailbox)."""


def binding(mailbox_id: str, direction: str) -> str:
    return f"mailbox:{mailbox_id}:{direction}"


class StoredLogin(BaseModel):
    """What is kept beside a sealed login: whose, since when, and the server it was entered for."""

    username: str | None = None
    password_updated_at: datetime | None = None
    destination: str | None = None
    """The fingerprint of the profile's server when it was entered (:func:`destination_of`)."""


def seal_login(
    ring: KeyRing, mailbox_id: str, direction: str, username: str, password: SecretStr
) -> SealedSecret:
    """The stored form of one login."""
    plain = json.dumps({"username": username, "password": password.get_secret_value()}).encode()
    return ring.seal(plain, binding(mailbox_id, direction))


def open_login(ring: KeyRing, mailbox_id: str, direction: str, stored: SealedSecret) -> tuple[str, SecretStr]:
    try:
        raw = ring.open(stored, binding(mailbox_id, direction))
        doc = json.loads(raw)
        return str(doc["username"]), SecretStr(str(doc["password"]))
    except (SealError, ValueError, KeyError, TypeError):
        raise CredentialsUnreadable(f"{direction} credentials of {mailbox_id} do not open") from None


class CredentialsRedirected(Exception):
    """The profile's server changed since this login was entered: it must be entered again."""


def endpoint_of(target: ServerTarget, direction: str) -> Endpoint:
    return target.incoming if direction == INCOMING else target.outgoing


def destination_of(profile: ProfileSnapshot) -> str:
    """Where and how the profile's logins are sent (see :mod:`mailwarden_runtime.sealing`)."""
    return destination_fingerprint(
        profile.incoming_protocol.value,
        profile.incoming,
        profile.outgoing,
        profile.advanced.verify_tls,
        profile.advanced.allow_plaintext_auth,
    )


def login_usable_for(login: StoredLogin | None, profile: ProfileSnapshot) -> bool:
    """A stored login may go to the profile's server only if it was entered for that server.

    Logins carry the destination fingerprint they were entered for. Logins stored before that
    field existed count only if entered after the profile's last change.
    """
    login = login or StoredLogin()
    if login.destination is not None:
        return login.destination == destination_of(profile)
    entered_at = login.password_updated_at
    return entered_at is not None and _aware(entered_at) >= _aware(profile.updated_at)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def for_transit(
    at_rest: KeyRing,
    transit: KeyRing,
    doc: MailboxDoc,
    profile: ProfileSnapshot,
    target: ServerTarget,
    directions: list[str],
    *,
    test_id: str,
    not_after: datetime,
) -> SealedCredentials | None:
    """Re-seal the stored logins with the transit ring, bound to this test and the server it reaches.

    Outgoing uses the separate outgoing login when there is one, else the incoming login.
    """
    mailbox_id = doc.id
    sealed: dict[str, SealedSecret] = {}
    for direction in directions:
        source, ct = direction, doc.sealed(direction)
        if ct is None and direction == OUTGOING:
            source, ct = INCOMING, doc.sealed(INCOMING)
        if ct is None:
            continue
        if not login_usable_for(doc.login(source), profile):
            raise CredentialsRedirected(f"{source} login of {mailbox_id} was entered for another server")
        username, password = open_login(at_rest, mailbox_id, source, ct)
        sealed[direction] = _bound_to_test(transit, username, password, target, direction, test_id, not_after)
    return SealedCredentials(**sealed) if sealed else None


def profile_for_transit(
    transit: KeyRing,
    profile: ProfileSnapshot,
    target: ServerTarget,
    directions: list[str],
    *,
    test_id: str,
    not_after: datetime,
) -> SealedCredentials | None:
    """The profile's own logins (sealed by profile-svc for events) re-sealed for this one test."""
    given = profile.sealed_credentials
    if given is None:
        return None
    sealed: dict[str, SealedSecret] = {}
    for direction in directions:
        ct = given.incoming if direction == INCOMING else given.outgoing
        if ct is None:
            continue
        try:
            doc = json.loads(transit.open(ct, f"profile:{profile.profile_id}:{direction}"))
            username, password = str(doc["username"]), SecretStr(str(doc["password"]))
        except (SealError, ValueError, KeyError, TypeError):
            raise CredentialsUnreadable(
                f"{direction} credentials of {profile.profile_id} do not open"
            ) from None
        sealed[direction] = _bound_to_test(transit, username, password, target, direction, test_id, not_after)
    return SealedCredentials(**sealed) if sealed else None


def _bound_to_test(
    transit: KeyRing,
    username: str,
    password: SecretStr,
    target: ServerTarget,
    direction: str,
    test_id: str,
    not_after: datetime,
) -> SealedSecret:
    """A login sealed for one test, direction, host and port of ``target``, until ``not_after``."""
    endpoint = endpoint_of(target, direction)
    return seal_for_test(
        transit,
        username,
        password,
        test_id=test_id,
        direction=direction,
        host=endpoint.host,
        port=endpoint.port,
        not_after=not_after,
    )


def reseal_stored(ring: KeyRing, mailbox_id: str, direction: str, stored: SealedSecret) -> SealedSecret:
    """Re-encrypt one stored login under the primary key (rotation); raises when unreadable."""
    try:
        return ring.reseal(stored, binding(mailbox_id, direction))
    except (SealError, ValueError):
        raise CredentialsUnreadable(f"{direction} credentials of {mailbox_id} do not open") from None


class NoLogin(Exception):
    """The mailbox (or its profile) has no login for this direction."""


def login_for_use(
    at_rest: KeyRing,
    transit: KeyRing,
    doc: MailboxDoc,
    profile: ProfileSnapshot,
    target: ServerTarget,
    direction: str,
    *,
    purpose: str,
    not_after: datetime,
) -> tuple[SealedSecret, Endpoint]:
    """The login sync-svc or sender-svc connects with, sealed to that purpose, this mailbox,
    direction and the profile's current host and port; refused when it was entered elsewhere."""
    mailbox_id = doc.id
    if profile.credential_source is CredentialSource.PROFILE:
        given = profile.sealed_credentials
        ct = None if given is None else (given.incoming if direction == INCOMING else given.outgoing)
        if ct is None:
            raise NoLogin(f"profile {profile.profile_id} has no {direction} login")
        try:
            opened = json.loads(transit.open(ct, f"profile:{profile.profile_id}:{direction}"))
            username, password = str(opened["username"]), SecretStr(str(opened["password"]))
        except (SealError, ValueError, KeyError, TypeError):
            raise CredentialsUnreadable(
                f"{direction} credentials of {profile.profile_id} do not open"
            ) from None
    else:
        source, ct = direction, doc.sealed(direction)
        if ct is None and direction == OUTGOING:
            source, ct = INCOMING, doc.sealed(INCOMING)
        if ct is None:
            raise NoLogin(f"mailbox {mailbox_id} has no {direction} login")
        if not login_usable_for(doc.login(source), profile):
            raise CredentialsRedirected(f"{source} login of {mailbox_id} was entered for another server")
        username, password = open_login(at_rest, mailbox_id, source, ct)
    endpoint = endpoint_of(target, direction)
    sealed = seal_for_use(
        transit,
        username,
        password,
        purpose=purpose,
        mailbox_id=mailbox_id,
        direction=direction,
        host=endpoint.host,
        port=endpoint.port,
        not_after=not_after,
    )
    return sealed, endpoint
