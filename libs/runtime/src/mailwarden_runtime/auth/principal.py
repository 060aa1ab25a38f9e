"""Who is calling: the subject of a verified token, its roles and what it may act on."""

from __future__ import annotations

from dataclasses import dataclass

from mailwarden_runtime.auth.permissions import ROLE_PERMISSIONS, Permission, Role, Scope


@dataclass(frozen=True)
class Principal:
    """A verified caller.

    ``subject`` is the token's ``sub`` (a user id from the identity provider, or an API token's
    subject); a mailbox owner owns the mailboxes whose ``owner_id`` is their subject.
    ``mailboxes`` are mailbox ids granted explicitly (an integration's, or an owner's extra ones).
    """

    subject: str
    roles: frozenset[Role]
    mailboxes: frozenset[str] = frozenset()
    via: str = "jwt"
    grants: frozenset[Permission] = frozenset()
    """Permissions held on everything besides the roles' (a service asking another)."""
    limit: frozenset[Permission] | None = None
    """At most these permissions, whatever the roles grant (an API token's ``scopes``); None: no limit."""

    def scope(self, permission: Permission) -> Scope | None:
        """The widest scope any of the roles grants for ``permission`` (None: not granted)."""
        if self.limit is not None and permission not in self.limit:
            return None
        if permission in self.grants:
            return Scope.ALL
        scopes = {ROLE_PERMISSIONS[r].get(permission) for r in self.roles} - {None}
        if Scope.ALL in scopes:
            return Scope.ALL
        return Scope.OWN if scopes else None

    def allows(self, permission: Permission) -> bool:
        return self.scope(permission) is not None

    def allows_mailbox(self, permission: Permission, mailbox_id: str, owner_id: str | None) -> bool:
        """May act with ``permission`` on this mailbox (all, or own: owned or granted)."""
        scope = self.scope(permission)
        if scope is Scope.ALL:
            return True
        if scope is Scope.OWN:
            return mailbox_id in self.mailboxes or (owner_id is not None and owner_id == self.subject)
        return False

    def allows_recipient(self, permission: Permission, kind: str, recipient_id: str) -> bool:
        """May see or change the alerts wall of ``kind:recipient_id`` (own: only ``user:<subject>``)."""
        scope = self.scope(permission)
        if scope is Scope.ALL:
            return True
        return scope is Scope.OWN and kind == "user" and recipient_id == self.subject

    @property
    def actor(self) -> str:
        """What audit records name: ``jwt:<sub>`` or ``token:<sub>``."""
        return f"{self.via}:{self.subject}"


SYSTEM = Principal(subject="system", roles=frozenset({Role.SYSTEM_ADMIN}), via="service")
