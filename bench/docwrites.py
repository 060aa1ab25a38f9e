"""Documents written per test, from the database's own change stream (every process's writes).

serverStatus opcounters count commands (a bulk write of 100 updates is one); what the embedded
server pays for is each document inserted or updated. A cluster-wide change stream sees every
document write of every service, so the bench counts them per collection and kind, whatever
the load on the machine.

The stream is read once, after the row, from the position noted when the row started: a watcher
waiting during the row would be woken by every write (SecantusDB wakes every waiting change
stream on any write), so its getMores and scans landed in the database's CPU per test.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from pymongo import MongoClient

# Bookkeeping: what is written once per interval or batch, not per test (relay positions, jobs and their
# batch records).
BOOKKEEPING = ("event_relay", "jobs", "job_batches")


class DocumentWrites:
    """Counts inserted / updated / replaced / deleted documents per ``db.collection`` while open."""

    def __init__(self, uri: str) -> None:
        self._client: MongoClient[dict[str, Any]] = MongoClient(
            uri, serverSelectionTimeoutMS=5000, tz_aware=True
        )
        self._counts: Counter[tuple[str, str]] = Counter()
        self._start: Mapping[str, Any] | None = None
        self._end: datetime | None = None
        self._collected = False

    def __enter__(self) -> DocumentWrites:
        with self._client.watch() as stream:
            self._start = stream.resume_token
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._end = datetime.now(UTC)

    def close(self) -> None:
        self._client.close()

    @property
    def counts(self) -> Counter[tuple[str, str]]:
        self._collect()
        return self._counts

    def _collect(self) -> None:
        """Read the stream from the start to the end of the span (or now, while still open)."""
        if self._collected:
            return
        end = self._end or datetime.now(UTC)
        with self._client.watch(resume_after=self._start, max_await_time_ms=200) as stream:
            while True:
                change = stream.try_next()
                if change is None:
                    break  # an empty batch: the scan reached the newest write
                wall = change.get("wallTime")
                if isinstance(wall, datetime) and wall.astimezone(UTC) > end:
                    break
                ns = change.get("ns", {})
                self._counts[(f"{ns.get('db')}.{ns.get('coll')}", change["operationType"])] += 1
        self._collected = self._end is not None

    def per_test(self, tests: int) -> dict[str, float]:
        """written (all kinds) and updated (update + replace) per test, of them bookkeeping, and the breakdown."""
        n = max(tests, 1)
        counts = self.counts
        written = sum(counts.values())
        updated = sum(v for (_, op), v in counts.items() if op in ("update", "replace"))
        bookkeeping = sum(v for (ns, _), v in counts.items() if ns.rsplit(".", 1)[-1] in BOOKKEEPING)
        return {
            "docs_written_per_test": round(written / n, 2),
            "docs_updated_per_test": round(updated / n, 2),
            "docs_bookkeeping_per_test": round(bookkeeping / n, 3),
        }

    def breakdown(self) -> dict[str, int]:
        return {f"{ns} {op}": v for (ns, op), v in sorted(self.counts.items())}
