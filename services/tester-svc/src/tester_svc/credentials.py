"""Opening the sealed login of one direction of a test with the transit key ring, at the last moment."""

from __future__ import annotations

from contracts.errors import ErrorCode
from contracts.events import TestRequested
from contracts.models import Direction
from mailwarden_mailnet.errors import NetError
from mailwarden_mailnet.login import Login, transit_binding
from mailwarden_mailnet.login import open_login as open_sealed
from mailwarden_runtime.crypto import KeyRing


def binding(req: TestRequested, direction: Direction) -> str:
    """The additional data the sealer bound the ciphertext to (its owner and direction)."""
    return transit_binding(req.credential_source, req.target.profile_id, req.mailbox.mailbox_id, direction)


def open_login(req: TestRequested, direction: Direction, keyring: KeyRing) -> Login:
    sealed = None
    if req.credentials is not None:
        sealed = req.credentials.incoming if direction is Direction.INCOMING else req.credentials.outgoing
    if sealed is None:
        raise NetError(ErrorCode.CREDENTIALS_MISSING, f"no {direction.value} credentials in the request")
    return open_sealed(sealed, binding(req, direction), keyring)
