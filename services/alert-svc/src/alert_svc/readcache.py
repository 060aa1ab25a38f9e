"""The read models a status event needs, kept in memory: each read is a database round trip.

The org policy, profile names and a profile's mailbox count change rarely, while every status event
needs them. This instance forgets a value as soon as it handles the event that changes it (see
``ReadModelHandlers``); a change handled by another instance is seen within ``ttl_s`` (default 5 s).
Mailboxes already stored need no upsert: ``note_mailbox`` only ever inserts a missing one, so the
first event of a profile reads the ids of its stored mailboxes once (one read instead of one write
per mailbox), and every mailbox noted or saved since is remembered for the life of the process.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from alert_svc.rules import OrgPolicy
from alert_svc.store.readmodels import ReadModelStore

T = TypeVar("T")
MAX_NOTED = 200_000  # mailbox ids remembered before the set starts over (bounded memory)


class ReadModelCache:
    def __init__(
        self, repo: ReadModelStore, ttl_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.repo = repo
        self.ttl_s = ttl_s
        self._clock = clock
        # Bumped by every forget: a load that started before it must not store its (older) value.
        self._generation = 0
        self._values: dict[str, tuple[float, object]] = {}
        self._noted: set[str] = set()
        self._loaded_profiles: set[str] = set()

    async def _cached(self, key: str, load: Callable[[], Awaitable[T]]) -> T:
        hit = self._values.get(key)
        if hit is not None and hit[0] > self._clock():
            return hit[1]  # type: ignore[return-value]
        generation = self._generation
        value = await load()
        if self.ttl_s > 0 and generation == self._generation:
            self._values[key] = (self._clock() + self.ttl_s, value)
        return value

    async def policy(self) -> OrgPolicy:
        return await self._cached("policy", self.repo.policy)

    async def profile_name(self, profile_id: str) -> str:
        async def load() -> str:
            profile = await self.repo.profile(profile_id)
            return profile.name if profile and profile.name else profile_id

        return await self._cached(f"name:{profile_id}", load)

    async def mailbox_total(self, profile_id: str) -> int:
        return await self._cached(f"total:{profile_id}", lambda: self.repo.profile_mailbox_count(profile_id))

    async def note_mailbox(self, mailbox_id: str, profile_id: str) -> None:
        """Upsert the mailbox once per process; a new one changes its profile's count."""
        if self.ttl_s <= 0:
            await self.repo.note_mailbox(mailbox_id, profile_id)
            return
        if profile_id not in self._loaded_profiles:
            ids = await self.repo.profile_mailbox_ids(profile_id)
            self._loaded_profiles.add(profile_id)
            self._remember(*ids)
        if mailbox_id in self._noted:
            return
        if await self.repo.note_mailbox(mailbox_id, profile_id):
            self.forget(f"total:{profile_id}")
        self._remember(mailbox_id)

    def _remember(self, *mailbox_ids: str) -> None:
        if len(self._noted) + len(mailbox_ids) > MAX_NOTED:
            self._noted.clear()
            self._loaded_profiles.clear()
        self._noted.update(mailbox_ids)

    def mailbox_saved(self, mailbox_id: str) -> None:
        """A created or updated mailbox is stored, and every profile's count may have changed."""
        self._remember(mailbox_id)
        self.forget_totals()

    def forget(self, *keys: str) -> None:
        self._generation += 1
        for key in keys:
            self._values.pop(key, None)

    def forget_policy(self) -> None:
        self.forget("policy")

    def forget_profile(self, profile_id: str) -> None:
        self.forget(f"name:{profile_id}")

    def forget_profiles(self) -> None:
        self.forget(*[k for k in self._values if k.startswith("name:")])

    def forget_totals(self) -> None:
        self._generation += 1
        for key in [k for k in self._values if k.startswith("total:")]:
            del self._values[key]
