"""Who am I, answered where the mailboxes are: the caller, and the mailboxes "own" covers for them."""

from __future__ import annotations

from mailbox_svc.store.mailboxes import MailboxStore
from mailwarden_runtime.auth import current_principal
from mailwarden_runtime.auth.errors import Unauthenticated
from mailwarden_runtime.auth.whoami import Identity, OwnedMailbox, identity_of, owner_scoped

MAX_OWN = 200
"""At most this many own mailboxes are listed (a person owns a few; an integration's grants are ids)."""


async def whoami(mailboxes: MailboxStore) -> Identity:
    principal = current_principal()
    if principal is None:  # the door verified a caller; without one there is nobody to describe
        raise Unauthenticated("a bearer token is required")
    own: list[OwnedMailbox] = []
    if owner_scoped(principal):
        found = await mailboxes.owned(principal.subject, principal.mailboxes, MAX_OWN)
        own = [OwnedMailbox(mailbox_id=m.id, email=m.email) for m in found]
    return identity_of(principal, own)
