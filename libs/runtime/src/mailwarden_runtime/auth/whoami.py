"""Who am I and what may I do: the verified caller as a screen can follow it.

A user interface hides what its user may not press from this answer (the console does); the
services' own checks stay the authority, so nothing here grants anything. The answer is built from
the :class:`~mailwarden_runtime.auth.Principal` the operation door verified, and from the mailboxes
the caller owns when some permission of theirs is owner-scoped (the service that stores mailboxes
looks those up and passes them in).
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from mailwarden_runtime.auth.permissions import PERMISSIONS, Role, Scope
from mailwarden_runtime.auth.principal import Principal

SIGNED_IN = "signed-in"
"""The permission of an operation any verified caller may call (who am I): no role is needed."""


class WhoAmIRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OwnedMailbox(BaseModel):
    mailbox_id: str
    email: str


class Identity(BaseModel):
    """The caller: subject, roles, each permission held and its scope, and what "own" covers."""

    subject: str = Field(description="The token's subject: the owner id of the caller's own things.")
    via: str = Field(description="`token` (an API token), `jwt` (the identity provider) or `service`.")
    roles: list[Role]
    permissions: dict[str, Scope] = Field(
        description="Each permission held: `all` (everything) or `own` (own mailboxes and wall only)."
    )
    granted_mailboxes: list[str] = Field(description="Mailbox ids granted to the caller besides owned ones.")
    own_mailboxes: list[OwnedMailbox] = Field(
        default_factory=list,
        description="The mailboxes an owner-scoped permission covers (owned or granted), when it has one.",
    )
    own_wall: str | None = Field(
        None, description="`user:<subject>`: the alerts wall an owner-scoped `alerts:read` covers."
    )

    def may(self, permission: str, scope: Scope | None = None) -> bool:
        """Holds ``permission`` (in ``scope``, when given)."""
        held = self.permissions.get(permission)
        return held is not None and (scope is None or held is scope)


def identity_of(principal: Principal, own_mailboxes: Iterable[OwnedMailbox] = ()) -> Identity:
    permissions = {p: s for p in PERMISSIONS if (s := principal.scope(p)) is not None}
    return Identity(
        subject=principal.subject,
        via=principal.via,
        roles=sorted(principal.roles),
        permissions=permissions,
        granted_mailboxes=sorted(principal.mailboxes),
        own_mailboxes=list(own_mailboxes),
        own_wall=f"user:{principal.subject}" if permissions.get("alerts:read") is Scope.OWN else None,
    )


def owner_scoped(principal: Principal) -> bool:
    """Some mailbox permission of the caller covers only their own mailboxes (look those up)."""
    return any(principal.scope(p) is Scope.OWN for p in PERMISSIONS if p.startswith(("mailboxes:", "mail:")))
