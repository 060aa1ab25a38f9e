"""The email server profiles mailbox-svc uses: its read model first, profile-svc when that lags.

The read model is filled from ``ProfileCreated``/``Updated`` events, so a profile created a moment
ago may not be in it yet. A miss is never taken as "unknown": profile-svc is asked over NATS
request-reply (``mailwarden.rpc.profile-svc.get``), and only its "no such profile" refuses. When
profile-svc cannot answer, the operation is refused as unavailable (503, try again), not as invalid.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

from pydantic import ValidationError

from contracts.events import ProfileSnapshot
from contracts.models import CredentialSource
from mailwarden_runtime.http import DomainError

log = logging.getLogger(__name__)

PROFILE_GET = "mailwarden.rpc.profile-svc.get"
Ask = Callable[[str, bytes, float], Awaitable[bytes]]
"""Send a NATS request (subject, body, timeout in seconds) and return the reply's body."""


UNAVAILABLE = "the email server profile cannot be checked now (profile-svc does not answer); try again"


class ProfileUnavailable(Exception):
    """profile-svc did not answer: whether the profile exists is not known."""


class ProfileReads(Protocol):
    """The read model's answers (``mailwarden_runtime.readmodels.ReadModels``)."""

    async def get_profile(self, profile_id: str) -> ProfileSnapshot | None: ...

    async def profile_deleted(self, profile_id: str) -> bool: ...


class ProfileDirectory:
    def __init__(self, repo: ProfileReads, ask: Ask, timeout_s: float = 3.0, settle_s: float = 5.0) -> None:
        self.repo = repo
        self.ask = ask
        self.timeout_s = timeout_s
        self.settle_s = settle_s

    async def require(
        self, profile_id: str, field: str = "profile_id", *, with_login: bool = False
    ) -> ProfileSnapshot:
        """The profile, or a 422 only when profile-svc itself says there is no such profile.

        ``with_login``: a profile whose login is kept on it is returned only once the read model
        has its sealed login (it travels in the event only), else 503.
        """
        try:
            profile = await self.find(profile_id, with_login=with_login)
        except ProfileUnavailable:
            raise DomainError(503, UNAVAILABLE, field) from None
        if profile is None:
            raise DomainError(422, "unknown email server profile", field)
        return profile

    async def find(self, profile_id: str, *, with_login: bool = False) -> ProfileSnapshot | None:
        """The profile, or None when it does not exist (asked, not guessed)."""
        known = await self.repo.get_profile(profile_id)
        if known is not None:
            return known
        if await self.repo.profile_deleted(profile_id):
            return None
        answered = await self._ask(profile_id)
        if answered is None or not with_login:
            return answered
        if answered.credential_source is CredentialSource.PROFILE:
            settled = await self._settled(profile_id)
            if settled is None:
                raise ProfileUnavailable("the profile's login has not reached mailbox-svc yet")
            return settled
        return answered

    async def find_quietly(self, profile_id: str) -> ProfileSnapshot | None:
        """Like :meth:`find`, but an unanswered question counts as unknown."""
        try:
            return await self.find(profile_id)
        except ProfileUnavailable:
            return None

    async def _settled(self, profile_id: str) -> ProfileSnapshot | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settle_s
        while loop.time() < deadline:
            if (profile := await self.repo.get_profile(profile_id)) is not None:
                return profile
            await asyncio.sleep(0.05)
        return None

    async def _ask(self, profile_id: str) -> ProfileSnapshot | None:
        body = json.dumps({"profile_id": profile_id}).encode()
        try:
            raw = await self.ask(PROFILE_GET, body, self.timeout_s)
            reply = json.loads(raw)
        except Exception as exc:  # no responders, timeout, a closed connection, garbage
            log.warning("profile-svc did not answer", extra={"profile_id": profile_id, "error": repr(exc)})
            raise ProfileUnavailable from exc
        if not reply.get("ok"):
            if reply.get("status") == 404:
                return None
            raise ProfileUnavailable(reply.get("detail"))
        return _snapshot_of(reply["result"])


def _snapshot_of(view: dict[str, object]) -> ProfileSnapshot:
    """profile-svc's view of a profile as a snapshot (no sealed login: the view never carries one)."""
    fields = {k: v for k, v in view.items() if k in ProfileSnapshot.model_fields}
    fields.setdefault("updated_at", datetime.now(UTC))
    try:
        return ProfileSnapshot.model_validate(fields)
    except ValidationError as exc:
        raise ProfileUnavailable(f"profile-svc answered an unreadable profile: {exc}") from exc
