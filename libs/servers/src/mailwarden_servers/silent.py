"""A TCP forwarder that can fall silent: the peer a client meets when its server hangs.

Until :meth:`SilencingProxy.go_silent` it passes bytes both ways to the real server. Then every
connection stays open, what the client sends is read and dropped (the kernel still acks it), and
nothing ever comes back: no error, no close, no answer to a ping. Clients must notice by their own
timeouts; stop paths must end anyway.
"""

from __future__ import annotations

import asyncio
import contextlib

from mailwarden_servers.ports import LOCALHOST

CHUNK = 65_536


class SilencingProxy:
    def __init__(self, upstream_port: int, upstream_host: str = LOCALHOST) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.silent = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._upstream_writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the proxy is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"nats://{LOCALHOST}:{self.port}"

    async def start(self) -> SilencingProxy:
        self._server = await asyncio.start_server(self._serve, LOCALHOST, 0)
        return self

    def go_silent(self) -> None:
        """From now on nothing passes; the real server sees its connections closed."""
        self.silent = True
        for writer in self._upstream_writers:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self.silent:
            await self._swallow(reader)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:  # the server is down: the client sees its connection refused, as without us
            writer.close()
            return
        self._upstream_writers.add(up_writer)
        back = asyncio.create_task(self._pump(up_reader, writer))
        self._tasks.add(back)
        await self._pump(reader, up_writer)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(CHUNK):
                if self.silent:
                    if writer in self._upstream_writers:  # client to server: keep reading, drop it
                        continue
                    return  # server to client: never another byte
                writer.write(data)
                await writer.drain()
        if not self.silent:  # the other side closed (e.g. the server died): pass the close on
            writer.close()

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while await reader.read(CHUNK):
                pass

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        for writer in self._writers | self._upstream_writers:
            writer.close()
        self._writers.clear()
        self._upstream_writers.clear()
