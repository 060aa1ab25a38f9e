"""Managing API tokens (``tokens:manage``): create (the secret shown once), list, revoke.

Served by profile-svc as declared operations (``/tokens``, ``mailwarden.rpc.profile-svc.tokens_*``).
A token made or revoked is announced (ApiTokenCreated, ApiTokenRevoked, with the caller as actor)
after it is stored in the bucket, so the audit lists it; the record keeps who made or revoked it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from contracts.access import ApiTokenCreated, ApiTokenRevoked
from mailwarden_runtime.auth.context import current_actor
from mailwarden_runtime.auth.permissions import Permission, Role
from mailwarden_runtime.auth.tokens import TokenInfo, TokenStore, new_token, ungranted_scopes
from mailwarden_runtime.http import DomainError

Subject = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.@:-]{1,128}$")]


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: Subject = Field(description="Who the token stands for: an integration's or a person's id.")
    roles: list[Role] = Field(min_length=1, description="Roles granted (see docs/access.md).")
    mailboxes: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]] = Field(
        default_factory=list, max_length=1000, description="Mailbox ids an integration or owner may act on."
    )
    scopes: list[Permission] = Field(
        default_factory=list,
        description=(
            "At most these permissions of the roles' (e.g. `mailboxes:write` without "
            "`mailboxes:approve`); empty: everything the roles grant."
        ),
    )
    description: str = Field("", max_length=200)
    ttl_days: int = Field(90, ge=1, le=730, description="Days until the token expires.")


class TokenCreated(TokenInfo):
    token: str = Field(description="The token itself: shown this once, stored nowhere.")


class TokenView(TokenInfo):
    state: str


class TokenList(BaseModel):
    items: list[TokenView]


class TokenRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")] = Field(
        description="The token's id (the part after `mwt_`)."
    )


class Empty(BaseModel):
    model_config = ConfigDict(extra="forbid")


Announce = Callable[[ApiTokenCreated | ApiTokenRevoked], Awaitable[object]]


async def _unannounced(_: ApiTokenCreated | ApiTokenRevoked) -> None:
    return None


class TokenAdmin:
    def __init__(self, store: TokenStore, announce: Announce = _unannounced) -> None:
        self.store = store
        self.announce = announce
        """Publishes the change with the caller as actor (profile-svc: ``runtime.envelope``)."""

    async def create(self, req: TokenCreate) -> TokenCreated:
        for i, scope in enumerate(req.scopes):
            if ungranted_scopes(req.roles, [scope]):
                raise DomainError(422, f"{scope} is not granted by the token's roles", f"scopes.{i}")
        text, record = new_token(
            req.subject,
            req.roles,
            ttl=timedelta(days=req.ttl_days),
            mailboxes=req.mailboxes,
            scopes=req.scopes,
            description=req.description,
            created_by=current_actor() or "",
        )
        await self.store.put(record)
        await self.announce(
            ApiTokenCreated(
                token_id=record.token_id,
                subject=record.subject,
                roles=[r.value for r in record.roles],
                mailboxes=record.mailboxes,
                scopes=list(record.scopes),
                expires_at=record.expires_at,
            )
        )
        return TokenCreated.model_validate(record.info().model_dump() | {"token": text})

    async def list(self, _: Empty | None = None) -> TokenList:
        now = datetime.now(UTC)
        records = await self.store.list()
        return TokenList(
            items=[
                TokenView.model_validate(r.info().model_dump() | {"state": r.state_at(now)}) for r in records
            ]
        )

    async def revoke(self, ref: TokenRef) -> TokenView:
        record = await self.store.get(ref.token_id)
        if record is not None and record.revoked_at is None:
            record = await self.store.revoke(ref.token_id, by=current_actor() or "")
            if record is not None:
                await self.announce(ApiTokenRevoked(token_id=record.token_id, subject=record.subject))
        if record is None:
            raise DomainError(404, "no such token", "token_id")
        return TokenView.model_validate(
            record.info().model_dump() | {"state": record.state_at(datetime.now(UTC))}
        )
