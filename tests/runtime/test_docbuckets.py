"""Entries stored in bucket documents under a unique multikey index, against the real MongoDB-wire
server: each entry is stored once, whoever else stores it meanwhile, and the attempts are bounded."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from mailwarden_runtime.docbuckets import ATTEMPTS, BucketContention, EntryBuckets, insert_buckets
from mailwarden_runtime.mongo import Document

pytestmark = pytest.mark.integration

Entry = tuple[str, str]
"""(key, group): entries of one group share a bucket."""


def by_group(entries: Sequence[Entry]) -> list[list[Entry]]:
    groups: dict[str, list[Entry]] = {}
    for entry in entries:
        groups.setdefault(entry[1], []).append(entry)
    return list(groups.values())


def bucket(entries: Sequence[Entry]) -> Document:
    return {"_id": uuid.uuid4().hex, "items": [{"k": key, "g": group} for key, group in entries]}


def key_of(entry: Entry) -> str:
    return entry[0]


@pytest.fixture
async def buckets(fresh_db: AsyncDatabase[dict[str, Any]]) -> EntryBuckets[Entry]:
    coll = fresh_db["items"]
    await coll.create_index("items.k", unique=True)
    return EntryBuckets(coll, "items", "k", key_of=key_of, document=bucket, group=by_group)


async def stored(buckets: EntryBuckets[Entry]) -> list[str]:
    return sorted([e["k"] async for d in buckets.coll.find() for e in d["items"]])


async def test_entries_stored_already_are_left_out_and_the_rest_stored_once(
    buckets: EntryBuckets[Entry],
) -> None:
    first = [("a", "x"), ("b", "x"), ("c", "y"), ("a", "x")]  # a copy inside the input
    assert await insert_buckets(buckets, first) == [("a", "x"), ("b", "x"), ("c", "y")]
    assert await buckets.coll.count_documents({}) == 2  # one bucket per group
    # b (stored) refuses its bucket x whole; d beside it is stored again in a new bucket; y is new
    again = await insert_buckets(buckets, [("b", "x"), ("d", "x"), ("e", "y"), ("c", "z")])
    assert sorted(again) == [("d", "x"), ("e", "y")]
    assert await stored(buckets) == ["a", "b", "c", "d", "e"]
    assert await insert_buckets(buckets, first) == []
    assert await buckets.stored_keys(["a", "e", "zz"]) == {"a", "e"}


async def test_writers_storing_the_same_entries_at_once_store_each_once(
    buckets: EntryBuckets[Entry],
) -> None:
    entries = [(f"k{n}", f"g{n % 3}") for n in range(60)]
    done = await asyncio.gather(
        *(insert_buckets(buckets, entries[n:] + entries[:n]) for n in (0, 15, 30, 45))
    )
    assert sorted(e for now in done for e in now) == sorted(entries)  # each reported by one writer
    assert await stored(buckets) == sorted(key for key, _ in entries)


async def test_a_bucket_refused_every_time_ends_after_the_bounded_attempts(
    buckets: EntryBuckets[Entry],
) -> None:
    """A refusal that no stored entry explains (here the bucket's own ``_id`` is taken) is not
    retried for ever."""
    await buckets.coll.insert_one({"_id": "taken", "items": []})
    tries: list[int] = []

    def same_id(entries: Sequence[Entry]) -> Document:
        tries.append(len(entries))
        return bucket(entries) | {"_id": "taken"}

    stubborn = EntryBuckets(buckets.coll, "items", "k", key_of=key_of, document=same_id, name="items")
    with pytest.raises(BucketContention, match="items kept colliding"):
        await insert_buckets(stubborn, [("a", "x")])
    assert tries == [1] * ATTEMPTS
    assert await stored(buckets) == []
