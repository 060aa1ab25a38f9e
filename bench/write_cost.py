"""Why the embedded database's CPU per write grows with what was written before, and what stops it.

    .venv/bin/python -m bench.write_cost [--steps 300,5000,12000] [--probe 300]

Starts a private SecantusDB (its own process), and for each client setting (``retryWrites`` on, as
pymongo does by default, and off) writes filler updates until the step's count of earlier writes
is reached, then times ``--probe`` lone ``update_one`` calls of mailbox-like documents and prints
the SecantusDB process's CPU per write (psutil). The server remembers every retryable write's
reply for 30 minutes (up to 10,000) and scans, and past the cap sorts, that registry on every
retryable write: its cost per write grows with the writes of the last half hour. A write sent
without a transaction number is not recorded.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import psutil
from pymongo import MongoClient

from mailwarden_servers import MongoWireServer


def _cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def _run(uri: str, proc: psutil.Process, retry: bool, steps: list[int], probe: int) -> list[float]:
    client: MongoClient[dict[str, Any]] = MongoClient(uri, retryWrites=retry)
    coll = client.bench[f"retry_{retry}"]
    coll.insert_many([{"_id": f"m{i}", "profile_id": "p", "n": 0} for i in range(1000)])
    coll.create_index("profile_id")
    written, out = 0, []
    for step in steps:
        while written < step:
            coll.update_one({"_id": f"m{written % 1000}"}, {"$inc": {"n": 1}})
            written += 1
        c0 = _cpu(proc)
        for i in range(probe):
            coll.update_one({"_id": f"m{i % 1000}"}, {"$set": {"status": f"s{i}"}})
        out.append(1000 * (_cpu(proc) - c0) / probe)
        written += probe
    client.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--steps", default="300,5000,12000", help="earlier writes before each probe (≥ 300: warm-up)"
    )
    p.add_argument("--probe", type=int, default=300)
    args = p.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    rows: dict[str, list[float]] = {}
    for retry in (True, False):
        # a server per setting: the registry is per process
        with tempfile.TemporaryDirectory() as tmp, MongoWireServer(Path(tmp)) as server:
            rows[f"retryWrites={str(retry).lower()}"] = _run(
                server.uri, psutil.Process(server.pid), retry, steps, args.probe
            )
    print(f"SecantusDB CPU per update_one (ms), {args.probe} probes after N earlier writes")
    print(f"{'client':20s}" + "".join(f"{f'N = {s:,}':>14s}" for s in steps))
    for name, values in rows.items():
        print(f"{name:20s}" + "".join(f"{v:14.2f}" for v in values))


if __name__ == "__main__":
    main()
