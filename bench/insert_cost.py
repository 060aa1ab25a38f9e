"""What one inserted mailbox costs the embedded database, by the indexes on its collection.

    .venv/bin/python -m bench.insert_cost [--rounds 8] [--batch 1000]

Starts a private SecantusDB (its own process, on-disk store) and, round by round and variant by
variant (interleaved, so load from elsewhere spreads over all of them), inserts ``--batch``
mailbox-like documents (about the size of a created mailbox with its two events, 2.4 KB) with one
durable ``insert_many`` (w: majority, j: true), the way ``create_many`` does. Prints the
SecantusDB process's CPU per inserted document (psutil), the median over rounds.

Why: in a profile of the bulk set-up, a third of SecantusDB's insert time reads the collection's
index catalog, per document and twice (its unique-key and geo pre-checks), for every index the
collection has, whether or not the document has an entry in it; so a partial index costs about
what a full one does.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from pymongo import MongoClient

from mailwarden_servers import MongoWireServer

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Index = tuple[str, dict[str, Any]]
NOW: list[Index] = [
    ("profile_id", {}),
    ("approval", {}),
    ("owner.id", {}),
    ("next_retry_at", {"sparse": True}),
]
VARIANTS: dict[str, list[Index]] = {
    "mailboxes' 4 indexes (now)": NOW,
    "the same, approval and next_retry_at partial": [
        ("profile_id", {}),
        ("approval", {"partialFilterExpression": {"approval": "pending"}}),
        ("owner.id", {}),
        ("next_retry_at", {"partialFilterExpression": {"next_retry_at": {"$gte": EPOCH}}}),
    ],
    "3 indexes": NOW[:1] + NOW[2:],
    "2 indexes": NOW[:1] + NOW[2:3],
    "1 index": NOW[:1],
    "_id only": [],
}


def _mailbox(n: int, rnd: int) -> dict[str, Any]:
    user = f"u{rnd}-{n}"
    return {
        "_id": user,
        "email": f"{user}@example.org",
        "owner": {"kind": "user", "id": user, "name": user, "email": f"{user}@example.org"},
        "profile_id": "prf_1",
        "approval": "approved",
        "pending_test_id": None,
        "next_retry_at": None,
        "credentials": {"incoming": {"kid": "k1", "ct": "c" * 120}},
        "settings": "s" * 900,
        "outbox": [{"id": f"e{n}", "subject": "mailwarden.mailbox.created", "body": "x" * 1100}],
    }


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--batch", type=int, default=1000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, MongoWireServer(Path(tmp)) as server:
        proc = psutil.Process(server.pid)
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri, w="majority", journal=True)
        colls = {}
        for n, (name, indexes) in enumerate(VARIANTS.items()):
            coll = client.bench[f"v{n}"]
            coll.insert_one({"_id": "first"})
            for key, options in indexes:
                coll.create_index(key, **options)
            colls[name] = coll
        cost: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for rnd in range(args.rounds):
            for name, coll in colls.items():
                docs = [_mailbox(n, rnd) for n in range(args.batch)]
                c0 = _cpu(proc)
                coll.insert_many(docs, ordered=True)
                cost[name].append(1000 * (_cpu(proc) - c0) / args.batch)
        client.close()
    print(f"SecantusDB CPU per inserted document, median of {args.rounds} rounds of {args.batch}")
    for name in VARIANTS:
        print(f"{name:48s} {statistics.median(cost[name]):6.3f} ms")


if __name__ == "__main__":
    main()
