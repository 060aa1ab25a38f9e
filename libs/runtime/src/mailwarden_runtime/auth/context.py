"""The caller of the request being served, for the checks and the audit fields deep in a service."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from mailwarden_runtime.auth.errors import Forbidden
from mailwarden_runtime.auth.permissions import Permission
from mailwarden_runtime.auth.principal import Principal

_current: ContextVar[Principal | None] = ContextVar("mailwarden_principal", default=None)


def current_principal() -> Principal | None:
    return _current.get()


def current_actor() -> str | None:
    """``token:<sub>`` / ``jwt:<sub>`` of the caller, or None outside a request (an event handler)."""
    principal = _current.get()
    return principal.actor if principal is not None else None


@contextmanager
def acting_as(principal: Principal | None) -> Iterator[None]:
    token = _current.set(principal)
    try:
        yield
    finally:
        _current.reset(token)


def require(permission: Permission) -> Principal:
    """The caller, if it holds ``permission`` in some scope; 403 otherwise. Outside a request: refused."""
    principal = _current.get()
    if principal is None or not principal.allows(permission):
        raise Forbidden(f"needs {permission}")
    return principal


def require_mailbox(permission: Permission, mailbox_id: str, owner_id: str | None) -> Principal:
    principal = require(permission)
    if not principal.allows_mailbox(permission, mailbox_id, owner_id):
        raise Forbidden(f"needs {permission} on this mailbox")
    return principal
