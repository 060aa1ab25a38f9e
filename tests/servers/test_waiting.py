"""The suite's one polling helper: a check that raises "not yet" is retried only when asked."""

from __future__ import annotations

import pytest

from mailwarden_servers import eventually


async def test_exceptions_named_in_ignoring_mean_not_yet_and_others_fail_at_once() -> None:
    calls = 0

    def ready_on_the_third_call() -> int:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise LookupError("not there yet")
        return calls

    assert await eventually(ready_on_the_third_call, "the third call", ignoring=(LookupError,)) == 3
    calls = 0
    with pytest.raises(LookupError):
        await eventually(ready_on_the_third_call, "the third call")
    with pytest.raises(AssertionError, match="never") as timed_out:
        await eventually(lambda: 1 // 0, "never", timeout=0.1, ignoring=(ZeroDivisionError,))
    assert isinstance(timed_out.value.__cause__, ZeroDivisionError)
