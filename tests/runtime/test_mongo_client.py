"""The database client's options that the write path depends on."""

from __future__ import annotations

from mailwarden_runtime.mongo import create_client
from mailwarden_runtime.settings import ServiceSettings


async def test_writes_are_not_retryable_unless_asked() -> None:
    # The embedded server scans its retryable-write registry on every such write (bench/write_cost.py).
    plain = create_client(ServiceSettings(), "t")
    asked = create_client(ServiceSettings(mongodb_retry_writes=True), "t")
    try:
        assert plain.options.retry_writes is False
        assert asked.options.retry_writes is True
    finally:
        await plain.close()
        await asked.close()
