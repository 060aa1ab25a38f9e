"""Waiting for something to happen in an asynchronous system: the one polling helper of the suite.

Tests and chaos scenarios wait for the event itself (a result stored, a message received, a
consumer drained) instead of sleeping a guessed time, and fail with what they waited for.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any


async def eventually(
    check: Callable[[], Any],
    what: str = "the condition",
    timeout: float = 30.0,  # noqa: ASYNC109 - the deadline of a poll, not of one awaited call
    *,
    interval: float = 0.05,
    ignoring: tuple[type[Exception], ...] = (),
) -> Any:
    """Poll ``check`` (plain or async) until it returns something truthy, and return that.

    ``ignoring``: exceptions that mean "not yet" (a service still starting, a refusal until it is
    ready); the last one is chained to the timeout. Raises ``AssertionError`` naming ``what``
    after ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Exception | None = None
    while True:
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
        except ignoring as exc:
            value, last = None, exc
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}") from last
        await asyncio.sleep(interval)
