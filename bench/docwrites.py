"""Documents written per test, from the database's own change stream (every process's writes).

serverStatus opcounters count commands (a bulk write of 100 updates is one); what the embedded
server pays for is each document inserted or updated. A cluster-wide change stream sees every
document write of every service, so the bench counts them per collection and kind, whatever
the load on the machine.
"""

from __future__ import annotations

import threading
from collections import Counter
from types import TracebackType
from typing import Any

from pymongo import MongoClient


class DocumentWrites:
    """Counts inserted / updated / replaced / deleted documents per ``db.collection`` while open."""

    def __init__(self, uri: str) -> None:
        self._client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=5000)
        self.counts: Counter[tuple[str, str]] = Counter()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="docwrites", daemon=True)

    def __enter__(self) -> DocumentWrites:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(10)
        self._client.close()

    def _follow(self) -> None:
        with self._client.watch(max_await_time_ms=1000) as stream:
            self._ready.set()
            while not self._stop.is_set() or stream.alive:
                change = stream.try_next()
                if change is None:
                    if self._stop.is_set():
                        return
                    continue
                ns = change.get("ns", {})
                self.counts[(f"{ns.get('db')}.{ns.get('coll')}", change["operationType"])] += 1

    def per_test(self, tests: int) -> dict[str, float]:
        """written (all kinds) and updated (update + replace) per test, and the breakdown."""
        n = max(tests, 1)
        written = sum(self.counts.values())
        updated = sum(v for (_, op), v in self.counts.items() if op in ("update", "replace"))
        return {
            "docs_written_per_test": round(written / n, 2),
            "docs_updated_per_test": round(updated / n, 2),
        }

    def breakdown(self) -> dict[str, int]:
        return {f"{ns} {op}": v for (ns, op), v in sorted(self.counts.items())}
