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


async def test_writes_are_acknowledged_once_durable() -> None:
    # A write acknowledged from memory is lost on a crash (test_mongo_durability.py, chaos A4).
    client = create_client(ServiceSettings(), "t")
    try:
        assert client.write_concern.document == {"w": "majority", "j": True}
    finally:
        await client.close()
