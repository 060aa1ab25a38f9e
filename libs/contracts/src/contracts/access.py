"""API tokens made and revoked (profile-svc's token operations), each published with its actor.

Never the token's secret (nor its hash): who it is for, what it may do, until when.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Protocol

from pydantic import Field, StringConstraints

from contracts import subjects
from contracts.events import Event

TokenId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class ApiTokenCreated(Event, subject=subjects.TOKEN_CREATED):
    """An API token was made: its subject (the actor its calls will name), roles and reach."""

    token_id: TokenId
    subject: Name
    roles: list[Name]
    mailboxes: list[str] = Field(default_factory=list, description="Mailboxes it may act on (own scope).")
    scopes: list[str] = Field(
        default_factory=list, description="At most these permissions; empty: the roles'."
    )
    expires_at: datetime


class ApiTokenRevoked(Event, subject=subjects.TOKEN_REVOKED):
    """An API token was revoked: every service refuses it within its token cache's lifetime."""

    token_id: TokenId
    subject: Name


class RotationCounts(Protocol):
    """What a service's rotation report says, as far as the event tells it."""

    @property
    def primary_kid(self) -> str: ...
    @property
    def examined(self) -> int: ...
    @property
    def rotated(self) -> Mapping[str, int]: ...
    @property
    def unreadable(self) -> int: ...


class CredentialKeysRotated(Event, subject=subjects.KEYS_ROTATED):
    """A service (``service``: profile-svc or mailbox-svc) re-encrypted its stored logins under its
    primary key (``keys:rotate``). Counts only: never a key."""

    service: Name
    primary_kid: Name
    examined: Annotated[int, Field(ge=0)]
    rotated: Annotated[int, Field(ge=0, description="Ciphertexts moved to the primary key.")]
    unreadable: Annotated[int, Field(ge=0, description="Ciphertexts no key of the ring opens.")]

    @classmethod
    def of(cls, service: str, report: RotationCounts) -> CredentialKeysRotated:
        """The event for ``service``'s finished rotation: its counts, summed over old key ids."""
        return cls(
            service=service,
            primary_kid=report.primary_kid,
            examined=report.examined,
            rotated=sum(report.rotated.values()),
            unreadable=report.unreadable,
        )


__all__ = ["ApiTokenCreated", "ApiTokenRevoked", "CredentialKeysRotated"]
