"""What one updated document costs the embedded database, by the indexes on its collection.

    .venv/bin/python -m bench.index_cost [--docs 3000] [--rounds 5]

Starts a private SecantusDB (its own process, on-disk store), fills one collection per variant
with mailbox-like documents and the mailbox indexes, then, round by round and variant by variant
(interleaved, so load from elsewhere spreads over all of them), updates 300 of them the way a
test result does (a bulk write setting the status fields and the document's events) and 100
more one by one. Prints the SecantusDB process's CPU per updated document (psutil), which does
not depend on how busy the rest of the machine is, as the median over rounds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from pymongo import MongoClient, UpdateOne

from mailwarden_servers import MongoWireServer

MAILBOX_INDEXES = (
    "profile_id",
    "approval",
    "incoming_status",
    "outgoing_status",
    "owner.id",
    "pending_test_id",
)
VARIANTS: dict[str, list[Any]] = {
    "mailbox indexes (6)": [],
    "+ outbox_at (change-stream recovery)": ["outbox_at"],
    "+ outbox_pending, (pending, since) (outbox relay)": [
        "outbox_pending",
        [("outbox_pending", 1), ("outbox_since", 1)],
    ],
}


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _mailbox(i: int) -> dict[str, Any]:
    return {
        "_id": f"m{i}",
        "profile_id": "p",
        "approval": "approved",
        "incoming_status": "ok",
        "outgoing_status": "ok",
        "owner": {"id": f"u{i}"},
        "pending_test_id": None,
        "version": 0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, MongoWireServer(Path(tmp)) as server:
        proc = psutil.Process(server.pid)
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
        colls = {}
        for n, (name, extra) in enumerate(VARIANTS.items()):
            coll = client.bench[f"v{n}"]
            coll.insert_many([_mailbox(i) for i in range(args.docs)])
            for index in (*MAILBOX_INDEXES, *extra):
                coll.create_index(index, sparse=index not in MAILBOX_INDEXES)
            colls[name] = coll
        bulk: dict[str, list[float]] = {name: [] for name in VARIANTS}
        single: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for rnd in range(args.rounds):
            for name, coll in colls.items():
                base = (rnd * 400) % (args.docs - 400)
                fields: dict[str, Any] = {
                    "outbox": [{"id": f"e{rnd}", "body": "x" * 800}],
                    "outbox_at": datetime.now(UTC),
                    "pending_test_id": f"t{rnd}",
                }
                if "outbox_pending" in name:
                    fields |= {"outbox_pending": True, "outbox_since": datetime.now(UTC)}
                c0 = _cpu(proc)
                coll.bulk_write(
                    [
                        UpdateOne(
                            {"_id": f"m{i}"},
                            {"$set": {**fields, "pending_test_id": f"t{rnd}{i}"}, "$inc": {"version": 1}},
                        )
                        for i in range(base, base + 300)
                    ],
                    ordered=False,
                )
                c1 = _cpu(proc)
                for i in range(base + 300, base + 400):
                    coll.update_one({"_id": f"m{i}"}, {"$set": fields})
                c2 = _cpu(proc)
                bulk[name].append(1000 * (c1 - c0) / 300)
                single[name].append(1000 * (c2 - c1) / 100)
        client.close()
    print(f"SecantusDB CPU per updated document, median of {args.rounds} rounds ({args.docs} documents)")
    print(f"{'variant':52s} {'bulk of 300':>12s} {'update_one':>12s}")
    for name in VARIANTS:
        print(f"{name:52s} {statistics.median(bulk[name]):9.2f} ms {statistics.median(single[name]):9.2f} ms")


if __name__ == "__main__":
    main()
