"""The benchmark's latency proxy passes bytes both ways, in order, and applies its delay."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bench.latency_proxy import LatencyProxyProcess

DELAY_MS = 40.0
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _greet_then_count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Server speaks first (like IMAP/SMTP), then answers once the client half-closes."""
    writer.write(b"* OK hello\r\n")
    await writer.drain()
    received = await reader.read()  # until EOF
    writer.write(f"got {len(received)} bytes\r\n".encode())
    await writer.drain()
    writer.close()


async def _upstream(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    return server, port


@pytest.fixture
async def echo_proxy(tmp_path: Path) -> AsyncIterator[LatencyProxyProcess]:
    server, port = await _upstream(_echo)
    proxy = LatencyProxyProcess(tmp_path, port, DELAY_MS)
    await asyncio.to_thread(proxy.start)
    yield proxy
    await asyncio.to_thread(proxy.stop)
    server.close()


async def _round_trip(port: int, payload: bytes) -> tuple[bytes, float]:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    first = b""
    for offset in range(0, len(payload), 4096):  # many small writes: order must survive
        writer.write(payload[offset : offset + 4096])
    first = await reader.readexactly(1)
    elapsed = time.perf_counter() - started
    rest = await reader.readexactly(len(payload) - 1)
    writer.close()
    await writer.wait_closed()
    return first + rest, elapsed


async def test_bytes_pass_both_ways_in_order_after_the_delay(echo_proxy: LatencyProxyProcess) -> None:
    payloads = [os.urandom(200_000 + i) for i in range(20)]
    results = await asyncio.wait_for(asyncio.gather(*(_round_trip(echo_proxy.port, p) for p in payloads)), 30)
    for payload, (echoed, first_byte_after) in zip(payloads, results, strict=True):
        assert echoed == payload
        assert first_byte_after >= 2 * DELAY_MS / 1000  # at least one round trip


async def test_server_greeting_and_half_close_travel_through(tmp_path: Path) -> None:
    server, port = await _upstream(_greet_then_count)
    proxy = LatencyProxyProcess(tmp_path, port, DELAY_MS)
    await asyncio.to_thread(proxy.start)
    try:
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await asyncio.wait_for(reader.readline(), 10) == b"* OK hello\r\n"
        assert time.perf_counter() - started >= DELAY_MS / 1000
        writer.write(b"x" * 12345)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 10) == b"got 12345 bytes\r\n"
        writer.close()
    finally:
        assert await asyncio.to_thread(proxy.stop) == 0  # clean exit on SIGTERM
        server.close()
    assert "latency proxy stopped" in proxy.log_since_start()
