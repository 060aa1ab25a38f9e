"""A local HTTP/1.1 listener that counts every accepted connection (the SSRF tests' witness).

Real sockets, no framework: what it counts is what reached the port, whatever the request.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["ok", "big", "hang", "hold", "redirect"]


@dataclass
class Listener:
    host: str
    port: int = 0
    mode: Mode = "ok"
    redirect_to: str = ""
    big_bytes: int = 1 << 20
    accepted: int = 0
    hosts: list[str] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            headers = dict(
                line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:] if ": " in line
            )
            self.hosts.append(headers.get("Host", headers.get("host", "")))
            await reader.readexactly(int(headers.get("Content-Length", headers.get("content-length", "0"))))
            if self.mode in ("hang", "hold"):  # hang: never released while the test runs
                await self.release.wait()
            if self.mode == "big":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % self.big_bytes)
                writer.write(b"x" * self.big_bytes)
            elif self.mode == "redirect":
                writer.write(
                    f"HTTP/1.1 302 Found\r\nLocation: {self.redirect_to}\r\nContent-Length: 0\r\n\r\n".encode()
                )
            else:
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self.in_flight -= 1
            writer.close()


@asynccontextmanager
async def listening(
    host: str = "127.0.0.1", mode: Mode = "ok", tls: ssl.SSLContext | None = None, redirect_to: str = ""
) -> AsyncIterator[Listener]:
    listener = Listener(host=host, mode=mode, redirect_to=redirect_to)
    if tls is not None:
        tls.sni_callback = lambda obj, name, ctx: listener.server_names.append(name)  # type: ignore[assignment]
    server = await asyncio.start_server(listener.handle, host, 0, ssl=tls)
    listener.port = server.sockets[0].getsockname()[1]
    try:
        yield listener
    finally:
        listener.release.set()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0)
