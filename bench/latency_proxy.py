"""A TCP proxy on 127.0.0.1 that delays every byte by a fixed one-way delay, in both directions.

Why a proxy and not `tc netem`: it needs no privileges or kernel modules, runs in CI, and the
delay is exact and per port. The model is netem's: every segment travels `delay` one way, so a
round trip costs 2 x delay. The TCP handshake is modelled too: the client's connect() returns at
once (the kernel completes it), so the proxy opens the upstream connection only 3 x delay later,
when a real server would see the client's final ACK. Data the client sends meanwhile is held and
arrives as it would over the wire; the first server byte reaches the client 2 RTT after connect,
as over a real link.

Bytes keep their order (one FIFO per direction; delivery times never decrease), connections are
independent (no head-of-line blocking between them), EOF and close travel with the same delay,
and backpressure is passed on (a slow reader pauses the other side). Run one process per upstream
port: `python -m bench.latency_proxy --listen-port 0 --upstream-port 993 --delay-ms 25`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from mailwarden_servers.ports import ServerStartError, free_port
from mailwarden_servers.process import ManagedProcess

__all__ = ["LOOPBACK", "READY_LINE", "DelayLine", "LatencyProxy", "LatencyProxyProcess", "main"]

LOOPBACK: Final = "127.0.0.1"  # the only address this proxy ever listens on or connects to
READY_LINE: Final = "latency proxy ready:"
_MAX_QUEUED = 4 * 1024 * 1024  # bytes held in one direction before the sender is paused
_EOF: Final = b""  # marker items in a delay line (data chunks are never empty)
_CLOSE: Final = None


class DelayLine:
    """One direction of one connection: deliver each item `delay` seconds after it was pushed.

    Items are delivered strictly in push order (deadlines never decrease), with one timer armed
    for the head of the queue at most, so thousands of lines cost no polling.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        delay: float,
        deliver: Callable[[bytes | None], None],
        on_drain: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._delay = delay
        self._deliver = deliver
        self._on_drain = on_drain
        self._queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._fired_at = 0.0
        self.queued_bytes = 0

    def push(self, item: bytes | None) -> None:
        """Queue data (`bytes`), EOF (`b""`) or close (`None`)."""
        if self._delay <= 0 and not self._queue:
            self._deliver(item)
            return
        deadline = self._loop.time() + self._delay
        self._queue.append((deadline, item))
        self.queued_bytes += len(item or b"")
        if self._timer is None:
            self._arm(deadline)

    def cancel(self) -> None:
        """Drop everything still queued (the destination is gone)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()
        self.queued_bytes = 0

    def _arm(self, deadline: float) -> None:
        self._fired_at = deadline
        self._timer = self._loop.call_at(deadline, self._flush)

    def _flush(self) -> None:
        self._timer = None
        # The loop may fire a timer up to its clock resolution early: what was due at the
        # deadline we armed for is due now.
        due = max(self._loop.time(), self._fired_at)
        was_full = self.queued_bytes >= _MAX_QUEUED
        while self._queue and self._queue[0][0] <= due:
            _, item = self._queue.popleft()
            self.queued_bytes -= len(item or b"")
            self._deliver(item)
        if self._queue:
            self._arm(self._queue[0][0])
        if was_full and self.queued_bytes < _MAX_QUEUED:
            self._on_drain()


class _Side(asyncio.Protocol):
    """One TCP connection of a proxied pair; everything it sees is handed to its `_Link`."""

    def __init__(self, link: _Link, is_client: bool) -> None:
        self.link = link
        self.is_client = is_client
        self.transport: asyncio.Transport | None = None
        self._pause_reasons: set[str] = set()

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.is_client:
            self.link.client_connected(self)

    def data_received(self, data: bytes) -> None:
        self.link.forward(self, data)

    def eof_received(self) -> bool:
        self.link.forward(self, _EOF)
        return True  # keep our sending half open: the other direction may still have data

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.side_lost(self)

    def pause_writing(self) -> None:
        self.link.peer(self).pause_reading("peer-buffer")

    def resume_writing(self) -> None:
        self.link.peer(self).resume_reading("peer-buffer")

    # flow control with several independent reasons to pause
    def pause_reading(self, reason: str) -> None:
        if not self._pause_reasons and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self._pause_reasons.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason not in self._pause_reasons:
            return
        self._pause_reasons.discard(reason)
        if not self._pause_reasons and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class _Link:
    """A client connection, its upstream connection and the two delay lines between them."""

    def __init__(self, proxy: LatencyProxy) -> None:
        self.proxy = proxy
        loop = proxy.loop
        self.client = _Side(self, is_client=True)
        self.upstream = _Side(self, is_client=False)
        self._pending: list[bytes | None] = []  # client -> upstream items due before it connected
        self._upstream_ready = False
        self._eofs_delivered = 0
        self._closed = False
        self.to_upstream = DelayLine(
            loop, proxy.delay, self._deliver_upstream, lambda: self.client.resume_reading("queue")
        )
        self.to_client = DelayLine(
            loop, proxy.delay, self._deliver_client, lambda: self.upstream.resume_reading("queue")
        )

    def peer(self, side: _Side) -> _Side:
        return self.upstream if side is self.client else self.client

    def client_connected(self, side: _Side) -> None:
        self.proxy.stats["connections"] += 1
        self.proxy.stats["open"] += 1
        self.proxy.links.add(self)
        # A real server sees the connection after SYN, SYN-ACK and ACK: 1.5 round trips.
        self.proxy.loop.call_later(3 * self.proxy.delay, self._start_upstream)

    def _start_upstream(self) -> None:
        if self._closed:
            return
        task = self.proxy.loop.create_task(self._connect_upstream())
        self.proxy.tasks.add(task)
        task.add_done_callback(self.proxy.tasks.discard)

    async def _connect_upstream(self) -> None:
        try:
            await self.proxy.loop.create_connection(lambda: self.upstream, LOOPBACK, self.proxy.upstream_port)
        except OSError:
            self.proxy.stats["upstream_errors"] += 1
            self._shutdown()
            return
        self._upstream_ready = True
        pending, self._pending = self._pending, []
        for item in pending:
            self._deliver_upstream(item)

    def forward(self, side: _Side, data: bytes) -> None:
        line = self.to_upstream if side is self.client else self.to_client
        if data:
            self.proxy.stats["bytes_up" if side is self.client else "bytes_down"] += len(data)
        line.push(data)
        if line.queued_bytes >= _MAX_QUEUED:
            side.pause_reading("queue")

    def side_lost(self, side: _Side) -> None:
        if self._closed:
            return
        # The close travels like a FIN/RST: the peer is closed after the delay, once what was
        # sent before it has been delivered.
        (self.to_upstream if side is self.client else self.to_client).push(_CLOSE)

    def _deliver_upstream(self, item: bytes | None) -> None:
        if not self._upstream_ready:
            self._pending.append(item)
            return
        self._deliver(self.upstream, item)

    def _deliver_client(self, item: bytes | None) -> None:
        self._deliver(self.client, item)

    def _deliver(self, dst: _Side, item: bytes | None) -> None:
        transport = dst.transport
        if transport is None or transport.is_closing():
            return
        if item is _CLOSE:
            self._shutdown()
        elif item == _EOF:
            if transport.can_write_eof():
                transport.write_eof()
            self._eofs_delivered += 1
            if self._eofs_delivered >= 2:
                self._shutdown()  # both halves closed cleanly
        else:
            transport.write(item)

    def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.to_upstream.cancel()
        self.to_client.cancel()
        self.client.close()
        self.upstream.close()
        self.proxy.links.discard(self)
        self.proxy.stats["open"] -= 1


class LatencyProxy:
    """The proxy server: 127.0.0.1:`listen_port` -> 127.0.0.1:`upstream_port`, `delay` s each way."""

    def __init__(self, listen_port: int, upstream_port: int, delay: float) -> None:
        if delay < 0:
            raise ValueError("delay must be >= 0")
        self.listen_port = listen_port
        self.upstream_port = upstream_port
        self.delay = delay
        self.loop = asyncio.get_running_loop()
        self.links: set[_Link] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.stats: collections.Counter[str] = collections.Counter()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen (backlog 4096: bursts of connects must not be refused); returns the port."""
        self._server = await self.loop.create_server(
            lambda: _Link(self).client, LOOPBACK, self.listen_port, backlog=4096
        )
        port: int = self._server.sockets[0].getsockname()[1]
        self.listen_port = port
        return port

    async def close(self) -> None:
        """Stop accepting, then cut every open connection (a benchmark run is over)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for link in list(self.links):
            link.to_upstream.cancel()
            link.to_client.cancel()
            link._shutdown()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.sleep(0)


def _raise_nofile_limit() -> None:
    """Each proxied connection needs two descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _serve(listen_port: int, upstream_port: int, delay: float) -> int:
    proxy = LatencyProxy(listen_port, upstream_port, delay)
    port = await proxy.start()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        proxy.loop.add_signal_handler(signum, stop.set)
    print(f"{READY_LINE} port={port} upstream={upstream_port} delay_ms={delay * 1000:g}", flush=True)
    await stop.wait()
    await proxy.close()
    stats = " ".join(f"{k}={v}" for k, v in sorted(proxy.stats.items()))
    print(f"latency proxy stopped: {stats}", flush=True)
    return 0


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("port must be 0..65535")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run one proxy until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m bench.latency_proxy", description=__doc__)
    parser.add_argument("--listen-port", type=_port, default=0, help="on 127.0.0.1; 0 = any free")
    parser.add_argument("--upstream-port", type=_port, required=True, help="on 127.0.0.1")
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay (RTT = 2x)")
    args = parser.parse_args(argv)
    if args.delay_ms < 0:
        parser.error("--delay-ms must be >= 0")
    _raise_nofile_limit()
    return asyncio.run(_serve(args.listen_port, args.upstream_port, args.delay_ms / 1000))


class LatencyProxyProcess(ManagedProcess):
    """`python -m bench.latency_proxy` as a managed child process (own PID, own log)."""

    stop_timeout = 10.0

    def __init__(self, workdir: str | os.PathLike[str], upstream_port: int, delay_ms: float) -> None:
        self.name = f"proxy-{upstream_port}-{delay_ms:g}ms"
        super().__init__(workdir)
        self.host = LOOPBACK
        self.upstream_port = upstream_port
        self.delay_ms = delay_ms
        self.port = free_port(LOOPBACK)

    @property
    def rtt_ms(self) -> float:
        """Round-trip time the proxy adds."""
        return 2 * self.delay_ms

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "bench.latency_proxy",
            "--listen-port", str(self.port),
            "--upstream-port", str(self.upstream_port),
            "--delay-ms", str(self.delay_ms),
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        """The child runs in its work dir: put the repository root on its path for `bench`."""
        root = str(Path(__file__).resolve().parents[1])
        path = os.environ.get("PYTHONPATH")
        return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}

    def wait_ready(self) -> None:
        """Wait for the ready line (printed once the socket listens)."""
        deadline = time.monotonic() + self.start_timeout
        while READY_LINE not in self.log_since_start():
            if self.poll() is not None:
                raise ServerStartError(f"latency proxy exited with {self.poll()}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ServerStartError(f"latency proxy not ready\n{self.log_tail()}")
            time.sleep(0.02)


if __name__ == "__main__":
    raise SystemExit(main())
