"""Wait for requested tests to finish, with a live progress bar.

Results come from MailboxStatusChanged events (mailbox-svc's decision after each test, carrying the
test id); a slow poll of each pending mailbox covers an event missed for any reason. Subscribe
*before* requesting the tests, so no result can slip past.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from contracts.envelope import EnvelopeError, parse_envelope
from contracts.events import MailboxStatusChanged
from contracts.subjects import MAILBOX_STATUS_CHANGED
from mailwarden_cli.client import Bus

POLL_S = 2.0


@dataclass
class Outcome:
    """How one mailbox's test ended: ``codes`` is ["success"] or the error code of each failed direction."""

    mailbox_id: str
    test_id: str
    incoming: str
    outgoing: str
    codes: list[str]
    messages: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.codes == ["success"]

    def as_json(self) -> dict[str, Any]:
        return {
            "mailbox_id": self.mailbox_id,
            "test_id": self.test_id,
            "ok": self.ok,
            "incoming_status": self.incoming,
            "outgoing_status": self.outgoing,
            "codes": self.codes,
            "messages": self.messages,
        }


def from_event(ev: MailboxStatusChanged) -> Outcome:
    errors = [e for e in (ev.incoming_error, ev.outgoing_error) if e is not None]
    failed = "failure" in (ev.incoming_status.value, ev.outgoing_status.value)
    codes = list(dict.fromkeys(e.code.value for e in errors)) if failed else ["success"]
    return Outcome(
        mailbox_id=ev.mailbox.mailbox_id,
        test_id=ev.test_id or "",
        incoming=ev.incoming_status.value,
        outgoing=ev.outgoing_status.value,
        codes=codes or ["failure"],
        messages=[e.message for e in errors] if failed else [],
    )


def from_view(view: dict[str, Any], test_id: str) -> Outcome:
    """The fallback: the mailbox as stored once its pending test is no longer ours."""
    statuses = (view.get("incoming_status", ""), view.get("outgoing_status", ""))
    failed = "failure" in statuses
    err = view.get("last_error") or {}
    return Outcome(
        mailbox_id=view["mailbox_id"],
        test_id=test_id,
        incoming=statuses[0],
        outgoing=statuses[1],
        codes=[err.get("code") or "failure"] if failed else ["success"],
        messages=[err.get("message", "")] if failed and err else [],
    )


class StatusWatch:
    """Collects status events from the moment it is entered; :meth:`wait` matches them to test ids."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._events: asyncio.Queue[MailboxStatusChanged] = asyncio.Queue()
        self._sub: Subscription | None = None

    async def __aenter__(self) -> StatusWatch:
        self._sub = await self.bus.nc.subscribe(MAILBOX_STATUS_CHANGED, cb=self._on_msg)
        await self.bus.nc.flush()
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._sub is not None and not self.bus.closed.is_set():
            await self._sub.unsubscribe()

    async def _on_msg(self, msg: Msg) -> None:
        try:
            env = parse_envelope(msg.data, MailboxStatusChanged)
        except EnvelopeError:
            return  # not ours to judge; mailbox-svc's consumers dead-letter bad events
        await self._events.put(env.data)

    async def wait(
        self, test_ids: dict[str, str], patience: float, console: Console, label: str = "testing"
    ) -> tuple[dict[str, Outcome], list[str]]:
        """Outcomes by mailbox id, and the mailbox ids still pending after ``patience`` seconds."""
        pending = {tid: mid for mid, tid in test_ids.items()}
        done: dict[str, Outcome] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        next_poll = loop.time() + POLL_S
        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(label, total=len(test_ids))
            while pending and loop.time() < deadline:
                try:
                    ev = await asyncio.wait_for(self._events.get(), timeout=0.25)
                except TimeoutError:
                    ev = None
                if ev is not None and ev.test_id in pending:
                    del pending[ev.test_id]
                    done[ev.mailbox.mailbox_id] = from_event(ev)
                if loop.time() >= next_poll:
                    await self._poll(pending, done)
                    next_poll = loop.time() + POLL_S
                failures = sum(1 for o in done.values() if not o.ok)
                progress.update(task, completed=len(done), description=f"{label} ({failures} failed)")
        return done, sorted(pending.values())

    async def _poll(self, pending: dict[str, str], done: dict[str, Outcome]) -> None:
        for tid, mid in list(pending.items()):
            view = await self.bus.call("mailbox-svc", "get", {"mailbox_id": mid})
            if view.get("pending_test_id") != tid and view.get("last_test_completed_at"):
                del pending[tid]
                done[mid] = from_view(view, tid)


def summary(outcomes: dict[str, Outcome], refused: dict[str, str], pending: list[str]) -> Counter[str]:
    """Mailboxes per code: each failed direction's code, ``success``, refusals and still-pending tests."""
    counts: Counter[str] = Counter()
    for o in outcomes.values():
        counts.update(o.codes)
    counts.update(refused.values())
    if pending:
        counts["still_running"] += len(pending)
    return counts
