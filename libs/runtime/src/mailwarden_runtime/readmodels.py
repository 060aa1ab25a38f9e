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
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from pydantic import BaseModel, ConfigDict
from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from contracts import events
from contracts.envelope import Envelope
from contracts.events import MailboxSnapshot, ProfileSnapshot, SettingsSnapshot
from mailwarden_runtime.consumer import ConsumerOptions
from mailwarden_runtime.documents import Stored
from mailwarden_runtime.mongo import Document
from mailwarden_runtime.service import ServiceRuntime

PROFILES = "profiles"
SETTINGS = "settings"
MAILBOXES = "mailboxes"
ORG = "org"
DUPLICATE_KEY = 11000
MAILBOX_BATCH = 200
"""Mailbox events a follower handles in one bulk write (a bulk set-up publishes thousands at once)."""
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

    async def put_profiles(self, profiles: Sequence[ProfileSnapshot]) -> bool:
        """:meth:`put_profile` for many in one bulk write (a bulk set-up's events); True if any changed."""
        for profile in profiles:
            self.forget(PROFILES, profile.profile_id)
        rows = [NewestRow(p.profile_id, p.version, {"snapshot": p.model_dump(mode="json")}) for p in profiles]
        return await newest_many(self.profiles, "version", rows) > 0

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

    async def put_mailboxes(self, mailboxes: Sequence[MailboxSnapshot]) -> bool:
        """:meth:`put_mailbox` for many in one bulk write (a bulk set-up's events); True if any changed."""
        for mailbox in mailboxes:
            self.forget(MAILBOXES, mailbox.mailbox_id)
        rows = [
            NewestRow(m.mailbox_id, m.version, {"snapshot": m.model_dump(mode="json")}) for m in mailboxes
        ]
        return await newest_many(self.mailboxes, "version", rows) > 0

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

    async def put_statuses(self, statuses: Sequence[tuple[events.MailboxStatusChanged, datetime]]) -> bool:
        """:meth:`put_status` for many in one bulk write; True if any changed."""
        for status, _ in statuses:
            self.forget(MAILBOXES, status.mailbox.mailbox_id)
        rows = [
            NewestRow(
                s.mailbox.mailbox_id,
                at,
                {"enabled_incoming": s.enabled_incoming, "enabled_outgoing": s.enabled_outgoing},
            )
            for s, at in statuses
        ]
        return await newest_many(self.mailboxes, "status_at", rows, or_equal=True) > 0

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
    query = newest_query(_id, field, order, or_equal)
    try:
        res = await coll.update_one(query, {"$set": {field: order, **values}}, upsert=True)
    except DuplicateKeyError:
        return False  # a newer one (or a deletion) is stored already
    return bool(res.modified_count or res.upserted_id is not None)


class NewestRow(NamedTuple):
    """One ``_newest`` write of :func:`newest_many`: the document, its order and its values."""

    id: str
    order: Any
    values: Document


def newest_query(_id: str, field: str, order: Any, or_equal: bool = False) -> Document:
    """The stored document ``_id`` unless it is a tombstone or newer by ``field`` (absent: older).

    ``$not`` of newer, not an ``$or`` with ``$exists``: SecantusDB answers an ``$or`` by scanning
    the collection (10 ms of its CPU per write at 1,000 documents, growing with them), this by
    the ``_id`` index (0.3 ms); MongoDB matches both the same.
    """
    newer = {"$gt" if or_equal else "$gte": order}
    return {"_id": _id, "deleted": {"$ne": True}, field: {"$not": newer}}


async def newest_many(coll: Any, field: str, rows: Sequence[NewestRow], *, or_equal: bool = False) -> int:
    """``_newest`` for many documents in two bulk writes at most; how many changed.

    The outcome is that of one conditional upsert per row in any order (a row older than what is
    stored, or one for a tombstone, changes nothing), but the rows are first inserted (unordered):
    SecantusDB pays 0.5 ms of CPU per upserted document against 0.13 per inserted one, and a
    bulk set-up's events are all new. Only rows whose id exists go on to a conditional update.
    """
    if not rows:
        return 0
    inserted, taken = await _insert_new(coll, [{"_id": r.id, field: r.order, **r.values} for r in rows])
    if not taken:
        return inserted
    ops = [
        UpdateOne(newest_query(r.id, field, r.order, or_equal), {"$set": {field: r.order, **r.values}})
        for n, r in enumerate(rows)
        if n in taken
    ]
    result = await coll.bulk_write(ops, ordered=False)
    return inserted + int(result.modified_count)


async def _insert_new(coll: Any, docs: list[Document]) -> tuple[int, set[int]]:
    """Insert what is not stored yet: (how many were inserted, the positions whose id was taken)."""
    try:
        await coll.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        details = exc.details
        errors = details.get("writeErrors", [])
        if details.get("writeConcernErrors") or any(e.get("code") != DUPLICATE_KEY for e in errors):
            raise
        return int(details.get("nInserted", 0)), {int(e["index"]) for e in errors}
    return len(docs), set()


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

    async def mailboxes_saved(
        envs: Sequence[Envelope[events.MailboxCreated]] | Sequence[Envelope[events.MailboxUpdated]],
    ) -> None:
        await done(await models.put_mailboxes([env.data.mailbox for env in envs]))

    async def profiles_saved(
        envs: Sequence[Envelope[events.ProfileCreated]] | Sequence[Envelope[events.ProfileUpdated]],
    ) -> None:
        await done(await models.put_profiles([env.data.profile for env in envs]))

    async def status_changed(env: Envelope[events.MailboxStatusChanged]) -> None:
        await done(await models.put_status(env.data, env.occurred_at))

    async def statuses_changed(envs: Sequence[Envelope[events.MailboxStatusChanged]]) -> None:
        await done(await models.put_statuses([(env.data, env.occurred_at) for env in envs]))

    name = runtime.name
    # Profiles and statuses in batches too: one at a time, each a fetch, a write and an ack, a
    # follower busy with other work took in ~8 mailboxes' events a second (sync-svc enabling 500:
    # the last mailbox started a minute after its events were published, bench/sync_many.py).
    batched = ConsumerOptions(batch_size=MAILBOX_BATCH)
    runtime.consume(
        events.ProfileCreated, f"{name}-profile-created", profile_saved, batched, batch_handler=profiles_saved
    )
    runtime.consume(
        events.ProfileUpdated, f"{name}-profile-updated", profile_saved, batched, batch_handler=profiles_saved
    )
    runtime.consume(events.ProfileDeleted, f"{name}-profile-deleted", profile_deleted)
    runtime.consume(events.EmailSettingsChanged, f"{name}-settings", settings_changed)
    if mailboxes:
        runtime.consume(
            events.MailboxCreated,
            f"{name}-mailbox-created",
            mailbox_saved,
            batched,
            batch_handler=mailboxes_saved,
        )
        runtime.consume(
            events.MailboxUpdated,
            f"{name}-mailbox-updated",
            mailbox_saved,
            batched,
            batch_handler=mailboxes_saved,
        )
        runtime.consume(
            events.MailboxStatusChanged,
            f"{name}-status",
            status_changed,
            batched,
            batch_handler=statuses_changed,
        )
