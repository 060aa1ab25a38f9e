"""Where a login may go: the destination it was entered for, and the one test it travels for.

- :func:`destination_fingerprint` names everything that decides where a stored login is sent and
  how (protocol, both endpoints' host, port and TLS mode, certificate checks, plaintext auth).
  A login is usable only while its destination's fingerprint is the one it was entered for:
  redirecting a profile makes the stored logins unusable until they are entered again.
- :func:`seal_for_test` / :func:`open_for_test`: on the bus a login is sealed (transit ring) to
  one test id, one direction, the host and port the tester will connect to, and an expiry inside
  the plaintext, so a blob captured from a stream opens for no other test, host or time.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

from pydantic import SecretStr

from contracts.models import Endpoint, SealedSecret
from mailwarden_runtime.crypto import KeyRing, SealError


class SealExpired(SealError):
    """The sealed login was for a test whose time is over."""


def destination_fingerprint(
    incoming_protocol: str,
    incoming: Endpoint,
    outgoing: Endpoint,
    verify_tls: bool,
    allow_plaintext_auth: bool,
) -> str:
    canonical = json.dumps(
        [
            incoming_protocol,
            [incoming.host.lower().rstrip("."), incoming.port, str(incoming.tls)],
            [outgoing.host.lower().rstrip("."), outgoing.port, str(outgoing.tls)],
            bool(verify_tls),
            bool(allow_plaintext_auth),
        ]
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def test_binding(test_id: str, direction: str, host: str, port: int) -> str:
    return f"test:{test_id}:{direction}:{host.lower().rstrip('.')}:{port}"


def use_binding(purpose: str, mailbox_id: str, direction: str, host: str, port: int) -> str:
    return f"use:{purpose}:{mailbox_id}:{direction}:{host.lower().rstrip('.')}:{port}"


def seal_for_use(
    ring: KeyRing,
    username: str,
    password: SecretStr,
    *,
    purpose: str,
    mailbox_id: str,
    direction: str,
    host: str,
    port: int,
    not_after: datetime,
) -> SealedSecret:
    """A login for sync-svc (``sync``) or sender-svc (``send``): bound to that purpose, mailbox,
    direction, host and port, with an expiry inside, like :func:`seal_for_test`."""
    return _seal(ring, username, password, use_binding(purpose, mailbox_id, direction, host, port), not_after)


def open_for_use(
    ring: KeyRing,
    sealed: SealedSecret,
    *,
    purpose: str,
    mailbox_id: str,
    direction: str,
    host: str,
    port: int,
    now: datetime | None = None,
) -> bytes:
    return _open(ring, sealed, use_binding(purpose, mailbox_id, direction, host, port), now)


def seal_for_test(
    ring: KeyRing,
    username: str,
    password: SecretStr,
    *,
    test_id: str,
    direction: str,
    host: str,
    port: int,
    not_after: datetime,
) -> SealedSecret:
    return _seal(ring, username, password, test_binding(test_id, direction, host, port), not_after)


def _seal(
    ring: KeyRing, username: str, password: SecretStr, binding: str, not_after: datetime
) -> SealedSecret:
    plain = json.dumps(
        {
            "username": username,
            "password": password.get_secret_value(),
            "not_after": int(not_after.timestamp()),
        }
    ).encode()
    return ring.seal(plain, binding)


def open_for_test(
    ring: KeyRing,
    sealed: SealedSecret,
    *,
    test_id: str,
    direction: str,
    host: str,
    port: int,
    now: datetime | None = None,
) -> bytes:
    """The plaintext JSON login, if it was sealed for exactly this test, direction, host and port and
    its time is not over; :class:`SealError` (or :class:`SealExpired`) otherwise."""
    return _open(ring, sealed, test_binding(test_id, direction, host, port), now)


def _open(ring: KeyRing, sealed: SealedSecret, binding: str, now: datetime | None) -> bytes:
    raw = ring.open(sealed, binding)
    try:
        not_after = json.loads(raw)["not_after"]
    except (ValueError, KeyError, TypeError):
        raise SealError("the sealed login has no expiry") from None
    if not isinstance(not_after, int) or (now or datetime.now(UTC)).timestamp() > not_after:
        raise SealExpired("the sealed login has expired")
    return raw
