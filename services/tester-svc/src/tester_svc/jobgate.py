"""Whether a job's test may still start: a cancelled job's tests that have not started are withdrawn.

mailbox-svc owns jobs; the tester asks it (``mailwarden.rpc.mailbox-svc.job_get``) before it runs a
job's test, and remembers each answer for a moment, so a job of thousands of tests costs one question
per job per ``ttl_s``, not one per test. When mailbox-svc does not answer, the test runs: a cancel is
a courtesy to the servers, never a reason to lose a result.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

JOB_GET = "mailwarden.rpc.mailbox-svc.job_get"
Ask = Callable[[str, bytes, float], Awaitable[bytes]]
"""Send a NATS request (subject, body, timeout in seconds) and return the reply's body."""


class JobGate:
    def __init__(self, ask: Ask, ttl_s: float = 1.0, timeout_s: float = 2.0) -> None:
        self.ask = ask
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._known: dict[str, tuple[float, bool]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def cancelled(self, job_id: str) -> bool:
        seen = self._known.get(job_id)
        if seen is not None and (seen[1] or time.monotonic() - seen[0] < self.ttl_s):
            return seen[1]  # a cancel is final: remembered for good
        lock = self._locks.setdefault(job_id, asyncio.Lock())
        async with lock:  # many tests of one job arrive together: one question
            seen = self._known.get(job_id)
            if seen is not None and (seen[1] or time.monotonic() - seen[0] < self.ttl_s):
                return seen[1]
            state = await self._state(job_id)
            cancelled = state == "cancelled"
            self._known[job_id] = (time.monotonic(), cancelled)
            if len(self._known) > 10_000:  # old jobs: forget the oldest half
                for key in sorted(self._known, key=lambda k: self._known[k][0])[:5_000]:
                    self._known.pop(key, None)
                    self._locks.pop(key, None)
            return cancelled

    async def _state(self, job_id: str) -> str | None:
        try:
            raw = await self.ask(JOB_GET, json.dumps({"job_id": job_id}).encode(), self.timeout_s)
            reply = json.loads(raw)
        except Exception as exc:  # no responders, timeout, garbage: run the test
            log.warning("job state unknown; the test runs", extra={"job_id": job_id, "error": repr(exc)})
            return None
        if not reply.get("ok"):
            return None
        state = reply["result"].get("state")
        return str(state) if state is not None else None
