"""What the bus says, for the screens: recent jobs, and a fan-out of notices to open pages.

The console subscribes to public subjects only: ``mailwarden.job.>`` (replayed from the MW_TESTS
stream for the last hours with an ordered consumer, so the jobs list survives a console restart),
``mailwarden.alerts.>`` and ``mailwarden.mailbox.status_changed``. A page learns *that* something
changed (an id and a kind, never the alert's text or a count) and then re-reads it through the
service's API with the user's own token, so what a user sees is always what the services allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from contracts import subjects

log = logging.getLogger(__name__)

JOB_STREAM = next(s.name for s in subjects.STREAMS if f"{subjects.JOBS}.>" in s.subjects)
PENDING_LIMIT = 1000
MAX_JOBS = 200


@dataclass(frozen=True)
class Notice:
    """One thing that changed: ``job``, ``alert`` or ``mailbox``, and the ids a page filters on."""

    kind: str
    ids: dict[str, str]

    def sse(self) -> str:
        return f"event: {self.kind}\ndata: {json.dumps(self.ids)}\n\n"


@dataclass
class JobSeen:
    """A job as its events told it (for the list; the job's page reads the job from mailbox-svc)."""

    job_id: str
    profile_id: str
    state: str
    total: int
    done: int = 0
    started_at: str = ""
    finished_at: str = ""


class Inbox:
    """One open page's pending notices. The same notice is kept once (a job's hundred progress
    events while the page is busy become one re-read), so a page that falls behind catches up with
    one re-read per changed region; past ``limit`` distinct notices the oldest go first."""

    def __init__(self, limit: int = PENDING_LIMIT) -> None:
        self._pending: dict[tuple[str, str], Notice] = {}
        self._ready = asyncio.Event()
        self._closed = False
        self._limit = limit

    def put(self, notice: Notice) -> None:
        self._pending.setdefault((notice.kind, json.dumps(notice.ids, sort_keys=True)), notice)
        while len(self._pending) > self._limit:
            self._pending.pop(next(iter(self._pending)))
        self._ready.set()

    def close(self) -> None:
        self._closed = True
        self._ready.set()

    async def get(self) -> Notice | None:
        """The oldest pending notice; ``None`` once closed and empty."""
        while not self._pending:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._pending.pop(next(iter(self._pending)))


@dataclass
class Hub:
    """Fan-out to every open event stream; a slow page never blocks the bus or the other pages."""

    _inboxes: set[Inbox] = field(default_factory=set)

    def publish(self, notice: Notice) -> None:
        for inbox in list(self._inboxes):
            inbox.put(notice)

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[Inbox]:
        inbox = Inbox()
        self._inboxes.add(inbox)
        try:
            yield inbox
        finally:
            self._inboxes.discard(inbox)

    def close(self) -> None:
        """Ends every open stream (the console is stopping)."""
        for inbox in list(self._inboxes):
            inbox.close()

    @property
    def listeners(self) -> int:
        return len(self._inboxes)


class LiveFeed:
    """The console's NATS connection: fills :class:`Hub` and the recent jobs."""

    def __init__(self, nats_url: str, job_history_h: float) -> None:
        self._url = nats_url
        self._history = timedelta(hours=job_history_h)
        self.hub = Hub()
        self.jobs: dict[str, JobSeen] = {}
        self._nc: Client | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="console-live")

    async def stop(self) -> None:
        self.hub.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.close(), 5)

    async def _run(self) -> None:
        """Connect (retrying: NATS may come up after the console), then subscribe."""
        delay = 0.5
        while True:
            try:
                nc = await nats.connect(self._url, name="console", max_reconnect_attempts=-1)
                break
            except Exception as exc:
                log.warning("NATS not reachable yet: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)
        self._nc = nc
        await nc.subscribe(f"{subjects.ALERTS}.>", cb=self._on_alert)
        await nc.subscribe(subjects.MAILBOX_STATUS_CHANGED, cb=self._on_status)
        while True:  # the stream may not exist before the services made it
            try:
                await nc.jetstream().subscribe(
                    f"{subjects.JOBS}.>",
                    stream=JOB_STREAM,
                    cb=self._on_job,
                    ordered_consumer=True,
                    deliver_policy=DeliverPolicy.BY_START_TIME,
                    config=ConsumerConfig(opt_start_time=datetime.now(UTC) - self._history),
                )
                return
            except Exception as exc:
                log.warning("job events not available yet: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10)

    async def _on_alert(self, msg: Msg) -> None:
        data = _data(msg)
        recipient = data.get("recipient") or {}
        self.hub.publish(
            Notice(
                "alert",
                {
                    "alert_id": str(data.get("alert_id", "")),
                    "recipient": f"{recipient.get('kind', '')}:{recipient.get('id', '')}",
                    "mailbox_id": str(data.get("mailbox_id") or ""),
                },
            )
        )

    async def _on_status(self, msg: Msg) -> None:
        mailbox = _data(msg).get("mailbox") or {}
        self.hub.publish(Notice("mailbox", {"mailbox_id": str(mailbox.get("mailbox_id", ""))}))

    async def _on_job(self, msg: Msg) -> None:
        data = _data(msg)
        job_id = str(data.get("job_id", ""))
        if not job_id:
            return
        seen = self.jobs.get(job_id) or JobSeen(job_id, str(data.get("profile_id", "")), "running", 0)
        progress = data.get("progress") or {}
        seen.total = int(data.get("total", progress.get("total", seen.total)) or 0)
        seen.done = int(progress.get("done", seen.done) or 0)
        seen.state = str(data.get("state", seen.state))
        seen.started_at = str(data.get("started_at", seen.started_at) or "")
        seen.finished_at = str(data.get("finished_at", seen.finished_at) or "")
        self.jobs[job_id] = seen
        while len(self.jobs) > MAX_JOBS:
            self.jobs.pop(next(iter(self.jobs)))
        self.hub.publish(Notice("job", {"job_id": job_id}))


def _data(msg: Msg) -> dict[str, Any]:
    """The event's ``data`` from its envelope; anything unreadable is skipped (it is only a notice)."""
    try:
        body = json.loads(msg.data)
    except ValueError:
        return {}
    data = body.get("data") if isinstance(body, dict) else None
    return data if isinstance(data, dict) else {}
