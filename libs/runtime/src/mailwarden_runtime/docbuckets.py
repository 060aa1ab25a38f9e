"""Bucket documents (the bucket pattern; JetStream's buckets are ``buckets.py``): append-only
documents that each hold many entries (``{_id, ..., <field>: [entry, ...]}``), an entry's key unique
across every bucket through a unique multikey index on ``<field>.<key>``.

Used where a document per entry cost too much (mailbox-svc's test run batches, the runtime's
``mailbox_uses``): one insert stores many entries, and a redelivered entry is still stored once,
even in another bucket or by another replica. The server refuses a whole bucket that holds an
entry stored already; :func:`insert_buckets` then drops the entries already stored and inserts the
rest again, as new buckets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from mailwarden_runtime.mongo import Document

E = TypeVar("E")

DUPLICATE_KEY = 11000
ATTEMPTS = 5


class BucketContention(RuntimeError):
    """Entries kept colliding with entries stored meanwhile (after ``ATTEMPTS`` inserts)."""


@dataclass(frozen=True, slots=True)
class EntryBuckets(Generic[E]):
    """How entries of type ``E`` are kept in buckets of ``coll``."""

    coll: AsyncCollection[Document]
    field: str
    """The bucket's array of entries."""
    key: str
    """The entry's unique field, as stored (the unique index is on ``<field>.<key>``)."""
    key_of: Callable[[E], str]
    """An entry's key, as stored under ``key``."""
    document: Callable[[Sequence[E]], Document]
    """A new bucket holding these entries: a new ``_id`` each call (a refused bucket is written
    again as another)."""
    group: Callable[[Sequence[E]], Sequence[Sequence[E]]] = lambda entries: [entries]
    """How entries are split into buckets (default: all in one)."""
    name: str = "entries"
    """What the entries are, for the error after ``ATTEMPTS``."""

    async def stored_keys(self, keys: Sequence[str]) -> set[str]:
        """Those of these keys stored in some bucket (through the unique index)."""
        path = f"{self.field}.{self.key}"
        wanted = set(keys)
        found = await self.coll.find({path: {"$in": list(wanted)}}, {path: 1}).to_list(None)
        return {str(e[self.key]) for d in found for e in d.get(self.field, []) if e.get(self.key) in wanted}


async def insert_buckets(buckets: EntryBuckets[E], entries: Iterable[E]) -> list[E]:
    """Store the entries not stored yet, usually in one round trip; returns those stored now.

    Entries with the same key are one entry (the first). The buckets are inserted unordered; a
    bucket holding an entry stored meanwhile is refused whole (the unique index), the others are
    stored. The refused buckets' entries not stored yet are then inserted again in new buckets, so
    no entry is ever stored twice. Another writer storing the same entries meanwhile only repeats
    that: after ``ATTEMPTS`` inserts :class:`BucketContention` is raised.
    """
    pending: list[E] = []
    seen: set[str] = set()
    for entry in entries:
        if (key := buckets.key_of(entry)) not in seen:
            seen.add(key)
            pending.append(entry)
    stored: list[E] = []
    for _ in range(ATTEMPTS):
        if not pending:
            return stored
        groups = buckets.group(pending)
        try:
            await buckets.coll.insert_many([buckets.document(g) for g in groups], ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise
            refused = {int(e["index"]) for e in errors}
            stored += [e for n, g in enumerate(groups) if n not in refused for e in g]
            again = [e for n in sorted(refused) for e in groups[n]]
            known = await buckets.stored_keys([buckets.key_of(e) for e in again])
            pending = [e for e in again if buckets.key_of(e) not in known]
            continue
        return stored + pending
    raise BucketContention(f"{buckets.name} kept colliding with entries stored meanwhile")
