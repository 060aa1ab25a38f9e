"""Profiles, the organisation's settings and mailboxes as their owners publish them: one read model.

mailbox-svc, sync-svc and sender-svc each keep a copy, in their own database, of what they decide
from: a document per profile, the settings, and (but in mailbox-svc, which owns them) a document
per mailbox with its enablement from its last test. :func:`follow` registers the consumers that
keep it; every write keeps the newest only (a higher ``version``, a later status), so redelivered
or reordered events change nothing, and a deleted profile stays a tombstone that no late update
brings back. Reads can be cached for a while (``cache_s``) where they are on every request's path;
a write through this process's own consumers drops its cached read at once.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from contracts import events
from contracts.envelope import Envelope
from contracts.events import MailboxSnapshot, ProfileSnapshot, SettingsSnapshot
from mailwarden_runtime.documents import Stored
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.service import ServiceRuntime

PROFILES = "profiles"
SETTINGS = "settings"
MAILBOXES = "mailboxes"
ORG = "org"
T = TypeVar("T")


class ProfileEntry(Stored):
    """A profile as its newest event showed it; ``deleted`` for ever once ProfileDeleted arrived.

    A service may keep fields of its own on the same document (sender-svc: the SIZE the profile's
    server advertised); they are read back in ``model_extra``.
    """

    model_config = ConfigDict(populate_by_name=True, extra="allow")
    version: int = 0
    deleted: bool = False
    snapshot: ProfileSnapshot | None = None


class SettingsEntry(Stored):
    version: int = 0
    snapshot: SettingsSnapshot | None = None


class MailboxEntry(Stored):
    """A mailbox as its newest snapshot showed it, and what its newest test enabled.

    The status may arrive before the snapshot: the entry then has no snapshot yet. A service may
    keep fields of its own on the same document (sender-svc: the login its server last refused);
    they are read back in ``model_extra``.
    """

    model_config = ConfigDict(populate_by_name=True, extra="allow")
    version: int = 0
    snapshot: MailboxSnapshot | None = None
    enabled_incoming: bool = False
    enabled_outgoing: bool = False
    status_at: datetime | None = None


class ReadModels:
    """The read model in one service's database: collections ``profiles``, ``settings`` and
    ``mailboxes`` (mailbox-svc, whose own mailboxes are there, follows profiles and settings only)."""

    def __init__(self, db: AsyncDatabase[Document], cache_s: float = 0.0) -> None:
        self.profiles = db[PROFILES]
        self.settings = db[SETTINGS]
        self.mailboxes = db[MAILBOXES]
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, object]] = {}

    # ---- writes (each True when it changed what is stored) -------------------------------------

    async def put_profile(self, profile: ProfileSnapshot) -> bool:
        self.forget(PROFILES, profile.profile_id)
        return await _snapshot(self.profiles, profile.profile_id, profile.version, profile)

    async def delete_profile(self, profile_id: str) -> bool:
        self.forget(PROFILES, profile_id)
        res = await self.profiles.update_one(
            {"_id": profile_id}, {"$set": {"deleted": True, "snapshot": None}}, upsert=True
        )
        return bool(res.modified_count or res.upserted_id is not None)

    async def put_settings(self, settings: SettingsSnapshot) -> bool:
        self.forget(SETTINGS, ORG)
        return await _snapshot(self.settings, ORG, settings.version, settings)

    async def put_mailbox(self, mailbox: MailboxSnapshot) -> bool:
        self.forget(MAILBOXES, mailbox.mailbox_id)
        return await _snapshot(self.mailboxes, mailbox.mailbox_id, mailbox.version, mailbox)

    async def put_status(self, status: events.MailboxStatusChanged, at: datetime) -> bool:
        """The enablement of the mailbox's newest test result (one published at ``at``)."""
        self.forget(MAILBOXES, status.mailbox.mailbox_id)
        return await _newest(
            self.mailboxes,
            status.mailbox.mailbox_id,
            "status_at",
            at,
            {"enabled_incoming": status.enabled_incoming, "enabled_outgoing": status.enabled_outgoing},
            or_equal=True,
        )

    # ---- reads ---------------------------------------------------------------------------------

    async def get_profile(self, profile_id: str) -> ProfileSnapshot | None:
        entry = await self.profile_entry(profile_id)
        return None if entry is None or entry.deleted else entry.snapshot

    async def profile_entry(self, profile_id: str) -> ProfileEntry | None:
        """What is stored of a profile (its tombstone too)."""
        if (hit := self._cached(PROFILES, profile_id, ProfileEntry)) is not None:
            return hit
        doc = await self.profiles.find_one({"_id": profile_id})
        entry = None if doc is None else ProfileEntry.model_validate(doc)
        self._keep(PROFILES, profile_id, entry)
        return entry

    async def profile_deleted(self, profile_id: str) -> bool:
        """Whether ``ProfileDeleted`` was seen for this id (deletion is final)."""
        entry = await self.profile_entry(profile_id)
        return entry is not None and entry.deleted

    async def all_profiles(self) -> dict[str, ProfileSnapshot]:
        found = self.profiles.find({"deleted": {"$ne": True}, "snapshot": {"$ne": None}})
        entries = [ProfileEntry.model_validate(d) async for d in found]
        return {e.id: e.snapshot for e in entries if e.snapshot is not None}

    async def get_settings(self) -> SettingsSnapshot:
        """The organisation's settings (their defaults until the first event arrives)."""
        if (hit := self._cached(SETTINGS, ORG, SettingsSnapshot)) is not None:
            return hit
        doc = await self.settings.find_one({"_id": ORG})
        snapshot = SettingsEntry.model_validate(doc).snapshot if doc else None
        self._keep(SETTINGS, ORG, snapshot)
        return snapshot or SettingsSnapshot()

    async def get_mailbox(self, mailbox_id: str) -> MailboxEntry | None:
        if (hit := self._cached(MAILBOXES, mailbox_id, MailboxEntry)) is not None:
            return hit
        doc = await self.mailboxes.find_one({"_id": mailbox_id})
        entry = None if doc is None else MailboxEntry.model_validate(doc)
        self._keep(MAILBOXES, mailbox_id, entry)
        return entry

    async def prefetch_mailboxes(self, mailbox_ids: Collection[str]) -> None:
        """Read the mailboxes not cached yet in one round trip (only with ``cache_s``): a batch of
        requests then decides from the cache."""
        if self.cache_s <= 0:
            return
        wanted = [m for m in set(mailbox_ids) if self._cached(MAILBOXES, m, MailboxEntry) is None]
        if wanted:
            async for doc in self.mailboxes.find({"_id": {"$in": wanted}}):
                entry = MailboxEntry.model_validate(doc)
                self._keep(MAILBOXES, entry.id, entry)

    async def all_mailboxes(self) -> list[MailboxEntry]:
        """Every mailbox whose snapshot has arrived."""
        return [
            MailboxEntry.model_validate(d) async for d in self.mailboxes.find({"snapshot": {"$ne": None}})
        ]

    # ---- the cache -----------------------------------------------------------------------------

    def forget(self, kind: str, key: str | None = None) -> None:
        """Drop cached reads: one, or every one of ``kind`` (after a change written elsewhere)."""
        for k in [
            k for k in self._cache if k == f"{kind}:{key}" or (key is None and k.startswith(f"{kind}:"))
        ]:
            del self._cache[k]

    def _cached(self, kind: str, key: str, cls: type[T]) -> T | None:
        hit = self._cache.get(f"{kind}:{key}")
        if hit is None or hit[0] <= time.monotonic() or not isinstance(hit[1], cls):
            return None
        return hit[1]

    def _keep(self, kind: str, key: str, value: object) -> None:
        if self.cache_s > 0 and value is not None:
            self._cache[f"{kind}:{key}"] = (time.monotonic() + self.cache_s, value)


async def _snapshot(coll: Any, _id: str, version: int, snapshot: BaseModel) -> bool:
    return await _newest(coll, _id, "version", version, {"snapshot": snapshot.model_dump(mode="json")})


async def _newest(
    coll: Any, _id: str, field: str, order: Any, values: Document, *, or_equal: bool = False
) -> bool:
    """Set ``values`` (and ``field``) unless what is stored is newer by ``field``; insert when absent.

    A profile's tombstone never matches, so the upsert's insert fails on its id and nothing changes.
    """
    older = {"$lte" if or_equal else "$lt": order}
    query = {"_id": _id, "deleted": {"$ne": True}, "$or": [{field: {"$exists": False}}, {field: older}]}
    try:
        res = await coll.update_one(query, {"$set": {field: order, **values}}, upsert=True)
    except DuplicateKeyError:
        return False  # a newer one (or a deletion) is stored already
    return bool(res.modified_count or res.upserted_id is not None)


Changed = Callable[[bool], Awaitable[None]]
"""Called after each event with whether it changed the read model (e.g. to wake a worker)."""


def follow(
    runtime: ServiceRuntime, models: ReadModels, *, mailboxes: bool = True, after: Changed | None = None
) -> None:
    """Keep ``models`` from the events, through durable consumers named ``<service>-profile-created``,
    ``-profile-updated``, ``-profile-deleted``, ``-settings`` and, with ``mailboxes``,
    ``-mailbox-created``, ``-mailbox-updated`` and ``-status``."""

    async def done(changed: bool) -> None:
        if after is not None:
            await after(changed)

    async def profile_saved(env: Envelope[events.ProfileCreated] | Envelope[events.ProfileUpdated]) -> None:
        await done(await models.put_profile(env.data.profile))

    async def profile_deleted(env: Envelope[events.ProfileDeleted]) -> None:
        await done(await models.delete_profile(env.data.profile_id))

    async def settings_changed(env: Envelope[events.EmailSettingsChanged]) -> None:
        await done(await models.put_settings(env.data.settings))

    async def mailbox_saved(env: Envelope[events.MailboxCreated] | Envelope[events.MailboxUpdated]) -> None:
        await done(await models.put_mailbox(env.data.mailbox))

    async def status_changed(env: Envelope[events.MailboxStatusChanged]) -> None:
        await done(await models.put_status(env.data, env.occurred_at))

    name = runtime.name
    runtime.consume(events.ProfileCreated, f"{name}-profile-created", profile_saved)
    runtime.consume(events.ProfileUpdated, f"{name}-profile-updated", profile_saved)
    runtime.consume(events.ProfileDeleted, f"{name}-profile-deleted", profile_deleted)
    runtime.consume(events.EmailSettingsChanged, f"{name}-settings", settings_changed)
    if mailboxes:
        runtime.consume(events.MailboxCreated, f"{name}-mailbox-created", mailbox_saved)
        runtime.consume(events.MailboxUpdated, f"{name}-mailbox-updated", mailbox_saved)
        runtime.consume(events.MailboxStatusChanged, f"{name}-status", status_changed)
