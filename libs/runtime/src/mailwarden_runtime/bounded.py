"""Waiting with a bound: the stop path must end even when NATS or the database does not answer.

Work runs as a task and is waited for with ``asyncio.wait``, never awaited bare: a task that
swallows its cancellation (nats-py does while it flushes) cannot hold the caller past its bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Deadline:
    """One overall time budget, shared by the steps of a stop."""

    def __init__(self, total_s: float) -> None:
        self._end = asyncio.get_running_loop().time() + total_s

    def left(self) -> float:
        return max(self._end - asyncio.get_running_loop().time(), 0.0)

    def cap(self, step_s: float, keep_s: float = 0.0) -> float:
        """``step_s``, but no more than what is left once ``keep_s`` is kept for the later steps."""
        return max(min(step_s, self.left() - keep_s), 0.0)


async def within(work: Awaitable[Any], timeout_s: float, what: str) -> bool:
    """Run ``work`` for at most ``timeout_s``; True when it finished without an error (errors are logged)."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=max(timeout_s, 0.0))
    if not done:
        task.cancel()
        log.warning("%s did not finish within %.1f s; left behind", what, timeout_s)
        return False
    if task.cancelled():
        log.warning("%s was cancelled", what)
        return False
    exc = task.exception()
    if exc is not None:
        log.warning("%s failed: %r", what, exc)
        return False
    return True


async def cancel_and_wait(task: asyncio.Task[Any] | None, timeout_s: float) -> bool:
    """Cancel ``task`` and wait up to ``timeout_s`` for it to end; True when it did."""
    if task is None or task.done():
        return True
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=max(timeout_s, 0.0))
    if not done:
        log.warning("task %s did not end within %.1f s of its cancellation", task.get_name(), timeout_s)
    return bool(done)


def honour_cancellation() -> None:
    """Raise ``CancelledError`` when the running task was asked to stop, even if the request was lost.

    A library may swallow the ``CancelledError`` it was woken with (nats-py while it flushes;
    ``asyncio.wait_for`` on 3.11 when its timeout fires at the same moment) and raise a timeout or
    return instead. The task's cancellation count still says it was asked: a loop that calls this
    once per turn then ends instead of running on, "left behind", for the life of the process.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def first_failure(*work: Coroutine[Any, Any, None], stop_s: float = 5.0) -> None:
    """Run ``work`` side by side until one ends; stop the others (bounded) and raise what ended it.

    Used instead of ``asyncio.TaskGroup``: on Python 3.11 a group whose child fails while the
    parent already waits in the group's exit cancels the parent and never takes that back
    (``uncancel`` runs before the wait), so the parent's cancellation count stays raised and the
    loop's next :func:`honour_cancellation` ends it for good. That stopped the event relays after
    the first NATS restart (chaos A3). This one never cancels its caller.
    """
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        left = [t for t in tasks if not t.done()]
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left, timeout=stop_s)
    failures = [t.exception() for t in tasks if t.done() and not t.cancelled()]  # each one retrieved
    first = next((t.exception() for t in tasks if t in done and not t.cancelled()), None)
    failure = first or next((f for f in failures if f is not None), None)
    if failure is not None:
        raise failure
