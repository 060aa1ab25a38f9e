"""A loop whose library swallowed the cancellation still ends: it was seen running on after stop()."""

from __future__ import annotations

import asyncio

import pytest

from mailwarden_runtime.bounded import cancel_and_wait, first_failure, honour_cancellation
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


async def test_a_failed_side_leaves_the_caller_uncancelled_so_its_loop_goes_on() -> None:
    """The relay's reader and publisher run side by side: one failing must not mark the relay cancelled.

    With ``asyncio.TaskGroup`` on 3.11 the caller kept a cancellation request when the publisher
    failed (NATS restarting), and the relay's next turn ended it for good (chaos A3).
    """
    reader_stopped = asyncio.Event()

    async def reader() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            reader_stopped.set()

    async def publisher() -> None:
        await asyncio.sleep(0.01)
        raise ConnectionError("nats: no responders")

    async def one_turn() -> int:
        with pytest.raises(ConnectionError):
            await first_failure(reader(), publisher())
        honour_cancellation()  # the loop's next turn: must not raise
        task = asyncio.current_task()
        assert task is not None
        return task.cancelling()

    assert await asyncio.wait_for(one_turn(), 5) == 0
    assert reader_stopped.is_set()


async def test_first_failure_stops_the_others_when_its_caller_is_cancelled() -> None:
    stopped: list[str] = []

    async def side(name: str) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            stopped.append(name)

    task = asyncio.create_task(first_failure(side("a"), side("b")))
    await asyncio.sleep(0.01)
    assert await cancel_and_wait(task, 2.0)
    assert task.cancelled() and sorted(stopped) == ["a", "b"]
