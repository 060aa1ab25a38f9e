"""Owner scoping inside mailbox-svc's operations: a mailbox owner passes the door of an
``owner_scoped`` operation with their ``own`` grant; these admit only their own mailboxes."""

from __future__ import annotations

from mailbox_svc.documents import MailboxDoc
from mailwarden_runtime.auth import Forbidden, Permission, Scope, current_principal


def admit(doc: MailboxDoc, permission: Permission, field: str | None = None) -> None:
    """Refuse (403) a caller whose grant of ``permission`` does not cover this mailbox.

    Without a caller (an internal call, not through a door) there is nothing to narrow. ``field``:
    the input that asked for it (one item of a batch), named in the refusal.
    """
    principal = current_principal()
    if principal is None:
        return
    owner_id = doc.owner.id if doc.owner.kind == "user" else None
    if not principal.allows_mailbox(permission, doc.id, owner_id):
        raise Forbidden(f"needs {permission} on this mailbox", field)


def admit_fields(fields: set[str]) -> None:
    """A mailbox owner may set their passwords; every other field needs ``mailboxes:write``."""
    principal = current_principal()
    if principal is None:
        return
    if fields - CREDENTIAL_FIELDS and principal.scope("mailboxes:write") is not Scope.ALL:
        raise Forbidden("needs mailboxes:write")


CREDENTIAL_FIELDS = frozenset({"credentials", "outgoing_credentials"})
