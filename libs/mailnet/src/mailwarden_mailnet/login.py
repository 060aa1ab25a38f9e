"""A mailbox login, opened from its sealed transit form at the last moment before it is sent.

mailbox-svc and profile-svc seal logins with the transit key ring, bound to their owner and
direction (:func:`transit_binding`); for a test, mailbox-svc seals them to that test, direction,
host, port and an expiry (:func:`open_test_login`). The tester and the sync open them here.
"""

from __future__ import annotations

import base64

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from contracts.errors import ErrorCode
from contracts.models import CredentialSource, Direction, SealedSecret
from mailwarden_mailnet.errors import NetError
from mailwarden_runtime.crypto import KeyRing, SealError
from mailwarden_runtime.sealing import SealExpired, open_for_test

_FORBIDDEN = ("\r", "\n", "\0")


class Login(BaseModel):
    """The opened credentials; the password stays a SecretStr until the auth step sends it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    username: str
    password: SecretStr

    def plain_blob(self) -> bytes:
        """SASL PLAIN initial response, base64 (RFC 4616): authzid empty."""
        raw = b"\0" + self.username.encode() + b"\0" + self.password.get_secret_value().encode()
        return base64.b64encode(raw)

    def secret_forms(self) -> tuple[str, ...]:
        """Every form in which the password may come back in a server reply (for redaction)."""
        pw = self.password.get_secret_value()
        return (pw, self.plain_blob().decode(), base64.b64encode(pw.encode()).decode())


def transit_binding(source: CredentialSource, profile_id: str, mailbox_id: str, direction: Direction) -> str:
    """The additional data the sealer bound the ciphertext to (its owner and direction)."""
    if source is CredentialSource.PROFILE:
        return f"profile:{profile_id}:{direction.value}"
    return f"mailbox:{mailbox_id}:{direction.value}"


def open_login(sealed: SealedSecret, binding: str, keyring: KeyRing) -> Login:
    """Open and check one sealed login; every failure is a classified :class:`NetError`."""
    try:
        plaintext = keyring.open(sealed, binding)
    except SealError:
        raise NetError(ErrorCode.CREDENTIALS_UNREADABLE, "the credentials do not open") from None
    return checked_login(plaintext)


def open_test_login(
    sealed: SealedSecret, keyring: KeyRing, *, test_id: str, direction: Direction, host: str, port: int
) -> Login:
    """Open a login sealed for one test (:func:`mailwarden_runtime.sealing.seal_for_test`): only for
    this test id, direction, host and port, and only before its expiry."""
    try:
        plaintext = open_for_test(
            keyring, sealed, test_id=test_id, direction=direction.value, host=host, port=port
        )
    except SealExpired:
        raise NetError(ErrorCode.CREDENTIALS_UNREADABLE, "the sealed credentials have expired") from None
    except SealError:
        raise NetError(
            ErrorCode.CREDENTIALS_UNREADABLE, "the credentials do not open for this test and server"
        ) from None
    return checked_login(plaintext)


def checked_login(plaintext: bytes) -> Login:
    try:
        login = Login.model_validate_json(plaintext)
    except ValidationError:
        raise NetError(ErrorCode.CREDENTIALS_UNREADABLE, "the credentials are not a login") from None
    password = login.password.get_secret_value()
    if not login.username or not password:
        raise NetError(ErrorCode.CREDENTIALS_MISSING, "empty user name or password")
    if any(ch in login.username or ch in password for ch in _FORBIDDEN):
        # Line breaks would let a stored password inject protocol commands.
        raise NetError(ErrorCode.CREDENTIALS_UNREADABLE, "the credentials contain line breaks")
    return login
