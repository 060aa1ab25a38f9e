"""Owner scoping inside alert-svc's operations: a mailbox owner passes the door of an
``owner_scoped`` operation with their ``own`` grant; these show and change only their own wall."""

from __future__ import annotations

from mailwarden_runtime.auth import Forbidden, Permission, Scope, current_principal


def own_wall(permission: Permission) -> str | None:
    """The one wall (``user:<subject>``) a caller with an ``own`` grant may use; None: any wall."""
    principal = current_principal()
    if principal is None or principal.scope(permission) is Scope.ALL:
        return None
    if principal.scope(permission) is None:
        raise Forbidden(f"needs {permission}")
    return f"user:{principal.subject}"


def admit_wall(permission: Permission, recipient_key: str | None) -> None:
    """Refuse (403) a wall that is not the caller's own when their grant is ``own``."""
    own = own_wall(permission)
    if own is not None and recipient_key != own:
        raise Forbidden(f"needs {permission} on this wall: only your own ({own})")
