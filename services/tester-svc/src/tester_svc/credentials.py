"""Opening the sealed login of one direction with the transit key ring, at the last moment."""

from __future__ import annotations

from contracts.errors import ErrorCode
from contracts.events import TestRequested
from contracts.models import Direction
from mailwarden_mailnet.errors import NetError
from mailwarden_mailnet.login import Login, open_test_login
from mailwarden_runtime.crypto import KeyRing


def open_login(req: TestRequested, direction: Direction, keyring: KeyRing) -> Login:
    """The login of ``direction``, if it was sealed for this test and the server it is about to reach.

    mailbox-svc seals each login to the test id, the direction, the target's host and port and an
    expiry, so a blob captured from the stream opens for no other test, server or time.
    """
    sealed = None
    if req.credentials is not None:
        sealed = req.credentials.incoming if direction is Direction.INCOMING else req.credentials.outgoing
    if sealed is None:
        raise NetError(ErrorCode.CREDENTIALS_MISSING, f"no {direction.value} credentials in the request")
    endpoint = req.target.incoming if direction is Direction.INCOMING else req.target.outgoing
    return open_test_login(
        sealed, keyring, test_id=req.test_id, direction=direction, host=endpoint.host, port=endpoint.port
    )
