"""Opening the sealed login of one direction with the transit key ring, at the last moment."""

from __future__ import annotations

from pydantic import ValidationError

from contracts.errors import ErrorCode
from contracts.events import TestRequested
from contracts.models import CredentialSource, Direction
from mailwarden_runtime.crypto import KeyRing, SealError
from tester_svc.errors import ProbeError
from tester_svc.probes.base import Login

_FORBIDDEN = ("\r", "\n", "\0")


def binding(req: TestRequested, direction: Direction) -> str:
    """The additional data the sealer bound the ciphertext to (its owner and direction)."""
    if req.credential_source is CredentialSource.PROFILE:
        return f"profile:{req.target.profile_id}:{direction.value}"
    return f"mailbox:{req.mailbox.mailbox_id}:{direction.value}"


def open_login(req: TestRequested, direction: Direction, keyring: KeyRing) -> Login:
    sealed = None
    if req.credentials is not None:
        sealed = req.credentials.incoming if direction is Direction.INCOMING else req.credentials.outgoing
    if sealed is None:
        raise ProbeError(ErrorCode.CREDENTIALS_MISSING, f"no {direction.value} credentials in the request")
    try:
        plaintext = keyring.open(sealed, binding(req, direction))
    except SealError:
        raise ProbeError(ErrorCode.CREDENTIALS_UNREADABLE, "the credentials do not open") from None
    try:
        login = Login.model_validate_json(plaintext)
    except ValidationError:
        raise ProbeError(ErrorCode.CREDENTIALS_UNREADABLE, "the credentials are not a login") from None
    password = login.password.get_secret_value()
    if not login.username or not password:
        raise ProbeError(ErrorCode.CREDENTIALS_MISSING, "empty user name or password")
    if any(ch in login.username or ch in password for ch in _FORBIDDEN):
        # Line breaks would let a stored password inject protocol commands.
        raise ProbeError(ErrorCode.CREDENTIALS_UNREADABLE, "the credentials contain line breaks")
    return login
