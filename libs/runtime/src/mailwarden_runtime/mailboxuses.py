"""Which profile each mailbox is on, kept per batch of mailbox events: no document per mailbox.

profile-svc (a profile in use cannot be deleted) and alert-svc (the majority alert's denominator)
each need a profile's mailboxes as their newest ``MailboxCreated``/``MailboxUpdated`` show them.
A document per mailbox made a bulk set-up insert two documents per mailbox besides the mailbox
itself, and the embedded store pays per document and per index (bench/README.md, session 6).

Here one handled batch of events is one document ``{_id, at, uses: [MailboxUse, ...]}`` (the
bucket pattern of mailbox-svc's ``test_run_batches``). Nothing is ever updated: a mailbox's state
is its entry of the highest version, chosen when read, so a late older event changes nothing.
Indexes: ``uses.key`` (``<mailbox>@<version>``) **unique**, so a redelivered event is stored once
even in another batch or by another replica; ``uses.mailbox_id`` finds a mailbox's entries. A
profile's mailboxes are read from every batch (rare reads: deleting a profile; alert-svc's count,
cached, read only when a test failed).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection

from contracts.events import MailboxSnapshot
from mailwarden_runtime.docbuckets import EntryBuckets, insert_buckets
from mailwarden_runtime.mongo import Document

MAILBOX_USES = "mailbox_uses"
LEGACY_CHUNK = 1000


class MailboxUse(BaseModel):
    """One mailbox event's part that counts: the mailbox's profile and whether it is active.

    Version 0 is a mailbox seen only in a status event (its creation not seen yet): any snapshot wins.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")
    mailbox_id: str
    version: int
    profile_id: str | None = None
    active: bool = True

    @classmethod
    def of(cls, mailbox: MailboxSnapshot) -> MailboxUse:
        return cls(
            mailbox_id=mailbox.mailbox_id,
            version=mailbox.version,
            profile_id=mailbox.profile_id,
            active=mailbox.active,
        )

    @property
    def key(self) -> str:
        return f"{self.mailbox_id}@{self.version}"

    def stored(self) -> Document:
        return {"key": self.key, **self.model_dump()}


class MailboxUses:
    """The entries in one service's database (collection ``mailbox_uses``)."""

    def __init__(self, coll: AsyncCollection[Document]) -> None:
        self.coll = coll
        self.buckets = EntryBuckets(coll, "uses", "key", key_of=_key, document=_bucket, name="mailbox uses")

    async def ensure_indexes(self) -> None:
        await self.coll.create_indexes(
            [
                IndexModel([("uses.key", ASCENDING)], name="uses_key", unique=True),
                IndexModel([("uses.mailbox_id", ASCENDING)], name="uses_mailbox_id"),
            ]
        )

    # ---- writes --------------------------------------------------------------------------------

    async def record(self, uses: Sequence[MailboxUse]) -> int:
        """Store the entries not stored yet as one document; how many were new.

        A document holding an entry stored meanwhile is refused whole (the unique ``uses.key``):
        it is written again without the stored ones, so no entry is ever stored twice
        (``docbuckets.insert_buckets``).
        """
        return len(await insert_buckets(self.buckets, uses))

    async def note(self, mailbox_id: str, profile_id: str) -> bool:
        """A mailbox seen in a status event counts for its profile until its snapshot arrives.

        True when the mailbox was not known before (nothing is written then otherwise).
        """
        if await self.coll.find_one({"uses.mailbox_id": mailbox_id}, {"_id": 1}) is not None:
            return False
        return await self.record([MailboxUse(mailbox_id=mailbox_id, version=0, profile_id=profile_id)]) > 0

    async def move_legacy(self, old: AsyncCollection[Document]) -> int:
        """Move a collection of one document per mailbox (``_id``, ``version``, ``profile_id``,
        ``active``) in here, chunk by chunk, then drop it; a restart in between repeats a chunk
        (its entries are refused as stored). Returns how many documents were moved."""
        moved = 0
        while docs := await old.find({}).limit(LEGACY_CHUNK).to_list(None):
            uses = [
                MailboxUse(
                    mailbox_id=str(d["_id"]),
                    version=int(d.get("version", 0)),
                    profile_id=d.get("profile_id"),
                    active=bool(d.get("active", True)),
                )
                for d in docs
            ]
            await self.record(uses)
            await old.delete_many({"_id": {"$in": [d["_id"] for d in docs]}})
            moved += len(docs)
        await old.drop()
        return moved

    # ---- reads ---------------------------------------------------------------------------------

    async def newest(self, mailbox_ids: Collection[str]) -> dict[str, MailboxUse]:
        """Each of these mailboxes' entry of the highest version (absent: never seen)."""
        if not mailbox_ids:
            return {}
        return _newest(await self._docs({"uses.mailbox_id": {"$in": list(mailbox_ids)}}), set(mailbox_ids))

    async def on_profile(self, profile_id: str, *, active_only: bool = False) -> list[MailboxUse]:
        """The mailboxes whose newest entry is on ``profile_id`` (only active ones: ``active_only``).

        Reads every batch: a mailbox's newer entry may be in a batch that does not name the
        profile (a move away), and SecantusDB scans 10,000 entries in 50 batches in ~0.1 s but
        looks up 10,000 mailbox ids through ``uses.mailbox_id`` in ~0.7 s.
        """
        newest = _newest(await self._docs({})).values()
        return [u for u in newest if u.profile_id == profile_id and (u.active or not active_only)]

    async def _docs(self, query: Document) -> list[Document]:
        return await self.coll.find(query, {"uses": 1}).to_list(None)


def _newest(docs: Sequence[Document], mailbox_ids: Collection[str] | None = None) -> dict[str, MailboxUse]:
    """Each mailbox's entry of the highest version in ``docs`` (only ``mailbox_ids``, if given)."""
    best: dict[str, MailboxUse] = {}
    for doc in docs:
        for raw in doc["uses"]:
            if mailbox_ids is not None and raw["mailbox_id"] not in mailbox_ids:
                continue
            current = best.get(raw["mailbox_id"])
            if current is None or raw["version"] > current.version:
                best[raw["mailbox_id"]] = MailboxUse.model_validate(raw)
    return best


def _key(use: MailboxUse) -> str:
    return use.key


def _bucket(uses: Sequence[MailboxUse]) -> Document:
    """One handled batch of events: a new document each time."""
    return {"_id": uuid.uuid4().hex, "at": datetime.now(UTC), "uses": [u.stored() for u in uses]}
