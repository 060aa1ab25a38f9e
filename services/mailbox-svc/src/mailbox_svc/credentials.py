"""Credentials at rest and on the bus: sealed to one mailbox and direction, opened only to re-seal.

At rest a login is ``KeyRing.seal(json{"username","password"}, "mailbox:<id>:<direction>")`` with the
credential ring; for a test it is opened and sealed again with the transit ring under the same
binding, so a ciphertext copied to another mailbox or direction never opens.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import SecretStr

from contracts.events import SealedCredentials
from contracts.models import Direction, SealedSecret
from mailwarden_runtime.crypto import KeyRing, SealError

INCOMING = Direction.INCOMING.value
OUTGOING = Direction.OUTGOING.value


class CredentialsUnreadable(Exception):
    """A stored ciphertext does not open (unknown key, tampered, or bound to another mailbox)."""


def binding(mailbox_id: str, direction: str) -> str:
    return f"mailbox:{mailbox_id}:{direction}"


def seal_login(ring: KeyRing, mailbox_id: str, direction: str, username: str, password: SecretStr) -> Any:
    """The stored form (a plain dict) of one login."""
    plain = json.dumps({"username": username, "password": password.get_secret_value()}).encode()
    return ring.seal(plain, binding(mailbox_id, direction)).model_dump()


def open_login(ring: KeyRing, mailbox_id: str, direction: str, stored: Any) -> tuple[str, SecretStr]:
    try:
        raw = ring.open(SealedSecret.model_validate(stored), binding(mailbox_id, direction))
        doc = json.loads(raw)
        return str(doc["username"]), SecretStr(str(doc["password"]))
    except (SealError, ValueError, KeyError, TypeError):
        raise CredentialsUnreadable(f"{direction} credentials of {mailbox_id} do not open") from None


def for_transit(
    at_rest: KeyRing, transit: KeyRing, mailbox_id: str, stored: Any, directions: list[str]
) -> SealedCredentials | None:
    """Re-seal the stored logins with the transit ring for the directions under test.

    Outgoing uses the separate outgoing login when there is one, else the incoming login.
    """
    stored = stored or {}
    sealed: dict[str, SealedSecret] = {}
    for direction in directions:
        source, ct = direction, stored.get(direction)
        if ct is None and direction == OUTGOING:
            source, ct = INCOMING, stored.get(INCOMING)
        if ct is None:
            continue
        username, password = open_login(at_rest, mailbox_id, source, ct)
        plain = json.dumps({"username": username, "password": password.get_secret_value()}).encode()
        sealed[direction] = transit.seal(plain, binding(mailbox_id, direction))
    return SealedCredentials(**sealed) if sealed else None


def reseal_stored(ring: KeyRing, mailbox_id: str, direction: str, stored: Any) -> Any:
    """Re-encrypt one stored login under the primary key (rotation); raises when unreadable."""
    try:
        sealed = SealedSecret.model_validate(stored)
        return ring.reseal(sealed, binding(mailbox_id, direction)).model_dump()
    except (SealError, ValueError):
        raise CredentialsUnreadable(f"{direction} credentials of {mailbox_id} do not open") from None
