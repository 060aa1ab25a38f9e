"""The in-memory read models: a value is read once per TTL, forgotten by the event that changes it."""

from __future__ import annotations

import asyncio
from typing import cast

from alert_svc.readcache import ReadModelCache
from alert_svc.rules import OrgPolicy
from alert_svc.store.readmodels import ProfileModel, ReadModelStore


class FakeRepo:
    """Counts reads; ``gate`` lets a test hold a policy read in flight."""

    def __init__(self) -> None:
        self.reads = 0
        self.policy_value = OrgPolicy()
        self.names = {"p1": "Profile one"}
        self.stored = {"p1": ["m1", "m2"]}
        self.notes: list[str] = []
        self.gate: asyncio.Event | None = None

    async def policy(self) -> OrgPolicy:
        self.reads += 1
        value = self.policy_value
        if self.gate is not None:
            await self.gate.wait()
        return value

    async def profile(self, profile_id: str) -> ProfileModel | None:
        self.reads += 1
        name = self.names.get(profile_id)
        return ProfileModel(id=profile_id, name=name) if name else None

    async def profile_mailbox_ids(self, profile_id: str) -> list[str]:
        self.reads += 1
        return list(self.stored.get(profile_id, []))

    async def note_mailbox(self, mailbox_id: str, profile_id: str) -> bool:
        self.notes.append(mailbox_id)
        return True


def make(ttl: float = 5.0) -> tuple[ReadModelCache, FakeRepo, list[float]]:
    repo = FakeRepo()
    now = [100.0]
    return ReadModelCache(cast(ReadModelStore, repo), ttl, clock=lambda: now[0]), repo, now


async def test_values_are_read_once_per_ttl_and_forgotten_by_their_events() -> None:
    cache, repo, now = make()
    assert await cache.profile_name("p1") == "Profile one"
    assert await cache.profile_name("p1") == "Profile one" and repo.reads == 1
    repo.names["p1"] = "Renamed"
    cache.forget_profile("p1")  # this instance handled ProfileUpdated
    assert await cache.profile_name("p1") == "Renamed" and repo.reads == 2
    repo.names["p1"] = "Renamed elsewhere"  # another instance handled it
    assert await cache.profile_name("p1") == "Renamed"
    now[0] += 5.1
    assert await cache.profile_name("p1") == "Renamed elsewhere"
    assert await cache.profile_name("gone") == "gone"  # deleted or unknown profile: its id


async def test_a_read_started_before_a_change_is_not_kept() -> None:
    cache, repo, _ = make()
    repo.gate = asyncio.Event()
    stale = asyncio.create_task(cache.policy())
    await asyncio.sleep(0)
    repo.policy_value = OrgPolicy(frozenset({"error"}), False)
    cache.forget_policy()  # the settings event was handled while the old value was being read
    repo.gate.set()
    assert (await stale).alert_levels == frozenset({"error", "information"})
    assert (await cache.policy()).alert_levels == frozenset({"error"})


async def test_only_unknown_mailboxes_are_upserted() -> None:
    cache, repo, _ = make()
    for mailbox in ("m1", "m2", "m3", "m3"):
        await cache.note_mailbox(mailbox, "p1")
    assert repo.notes == ["m3"] and repo.reads == 1  # the profile's stored ids, read once
    cache.mailbox_saved("m4")
    await cache.note_mailbox("m4", "p1")
    assert repo.notes == ["m3"]

    uncached, repo, _ = make(ttl=0)
    await uncached.note_mailbox("m1", "p1")
    await uncached.note_mailbox("m1", "p1")
    assert repo.notes == ["m1", "m1"]
