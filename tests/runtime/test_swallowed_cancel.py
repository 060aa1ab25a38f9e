"""A loop whose library swallowed the cancellation still ends: it was seen running on after stop()."""

from __future__ import annotations

import asyncio

from mailwarden_runtime.bounded import cancel_and_wait, honour_cancellation
from mailwarden_runtime.loop import BackgroundLoop


async def _swallowing_step() -> None:
    """Like a library that turns the CancelledError it was woken with into a timeout."""
    try:
        await asyncio.sleep(0.01)
    except asyncio.CancelledError:
        raise TimeoutError from None


async def test_a_loop_that_checks_ends_even_when_its_step_swallows_the_cancel() -> None:
    turns = 0

    async def loop() -> None:
        nonlocal turns
        while True:
            honour_cancellation()
            turns += 1
            try:
                await _swallowing_step()
            except TimeoutError:
                continue

    task = asyncio.create_task(loop())
    await asyncio.sleep(0.05)
    assert await cancel_and_wait(task, 1.0)
    assert task.cancelled()


async def _always_more() -> bool:
    """A pass that swallows the cancel and says there is more work: the loop never waits."""
    try:
        await asyncio.sleep(0.01)
    except asyncio.CancelledError:
        pass
    return True


async def test_background_loop_stops_when_a_pass_swallows_the_cancel() -> None:
    loop = BackgroundLoop("swallowing", _always_more, interval_s=0.01)
    loop.start()
    await asyncio.sleep(0.05)
    assert await loop.stop(1.0)
