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
    plain = json.dumps(
        {
            "username": username,
            "password": password.get_secret_value(),
            "not_after": int(not_after.timestamp()),
        }
    ).encode()
    return ring.seal(plain, test_binding(test_id, direction, host, port))


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
    raw = ring.open(sealed, test_binding(test_id, direction, host, port))
    try:
        not_after = json.loads(raw)["not_after"]
    except (ValueError, KeyError, TypeError):
        raise SealError("the sealed login has no expiry") from None
    if not isinstance(not_after, int) or (now or datetime.now(UTC)).timestamp() > not_after:
        raise SealExpired("the sealed login has expired")
    return raw
