"""A capped line connection over asyncio streams: the only way we talk to a mail server.

Why our own wire instead of aioimaplib/aiosmtplib: the tester and the sync face hostile servers. aioimaplib
has no STARTTLS, no line or literal cap, resets its timeout on every line and logs LOGIN with the
password; aiosmtplib's opportunistic STARTTLS and exception texts would need as much wrapping as
these few lines. One wire gives every protocol the same guarantees: connect only to the address
the policy checked, a maximum line length (``LimitOverrunError`` → ``response_too_long``), a
maximum of bytes read per connection, literals bounded by that budget, STARTTLS that refuses
plaintext buffered before the handshake (STARTTLS injection), and no logging of what we send.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from contracts.errors import ErrorCode
from mailwarden_mailnet.errors import NetError


@dataclass(frozen=True)
class Limits:
    max_line: int = 8192
    max_bytes: int = 65536


class Wire:
    """One TCP (then maybe TLS) connection to a mail server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, limits: Limits) -> None:
        self.reader = reader
        self.writer = writer
        self.limits = limits
        self.bytes_read = 0
        self.tls = False

    @classmethod
    async def open(
        cls,
        sock: socket.socket,
        limits: Limits,
        ssl_ctx: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> Wire:
        """Wrap a connected socket; with ``ssl_ctx`` the TLS handshake happens here (implicit TLS)."""
        if ssl_ctx is None:
            reader, writer = await asyncio.open_connection(sock=sock, limit=limits.max_line)
        else:
            reader, writer = await asyncio.open_connection(
                sock=sock, limit=limits.max_line, ssl=ssl_ctx, server_hostname=server_hostname
            )
        wire = cls(reader, writer, limits)
        wire.tls = ssl_ctx is not None
        return wire

    def reset_budget(self, max_bytes: int | None = None) -> None:
        """Start a new byte budget (a long-lived session budgets each command, not the connection)."""
        self.bytes_read = 0
        if max_bytes is not None:
            self.limits = Limits(self.limits.max_line, max_bytes)

    def _count(self, n: int) -> None:
        self.bytes_read += n
        if self.bytes_read > self.limits.max_bytes:
            raise NetError(
                ErrorCode.RESPONSE_TOO_LONG, f"the server sent more than {self.limits.max_bytes} bytes"
            )

    async def read_line(self) -> bytes:
        """One line without its CRLF; EOF → connection_lost, an over-long line → response_too_long."""
        try:
            line = await self.reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise NetError(
                ErrorCode.RESPONSE_TOO_LONG, f"a response line is longer than {self.limits.max_line} bytes"
            ) from None
        except asyncio.IncompleteReadError:
            raise NetError(ErrorCode.CONNECTION_LOST, "the server closed the connection") from None
        self._count(len(line))
        return line.rstrip(b"\r\n")

    async def read_exactly(self, n: int) -> bytes:
        """A literal's bytes; refused up front when it would break the byte budget."""
        if n > self.limits.max_bytes - self.bytes_read:
            raise NetError(ErrorCode.RESPONSE_TOO_LONG, f"the server announced a {n}-byte literal")
        try:
            data = await self.reader.readexactly(n)
        except asyncio.IncompleteReadError:
            raise NetError(ErrorCode.CONNECTION_LOST, "the server closed the connection") from None
        self._count(n)
        return data

    async def send(self, data: bytes) -> None:
        """Write and flush. Never logged: ``data`` may hold credentials."""
        self.writer.write(data)
        await self.writer.drain()

    def buffered(self) -> int:
        """Bytes received but not yet read (StreamReader keeps them in ``_buffer``)."""
        buf = getattr(self.reader, "_buffer", b"")
        return len(buf)

    async def start_tls(self, ctx: ssl.SSLContext, server_hostname: str) -> None:
        """Upgrade after a STARTTLS go-ahead; plaintext already buffered is an injection attack."""
        if self.buffered():
            raise NetError(
                ErrorCode.PROTOCOL_VIOLATION, "the server sent data before the TLS handshake (injection)"
            )
        await self.writer.start_tls(ctx, server_hostname=server_hostname)
        self.tls = True

    def ssl_object(self) -> ssl.SSLObject | None:
        obj = self.writer.get_extra_info("ssl_object")
        return obj if isinstance(obj, ssl.SSLObject) else None

    def abort(self) -> None:
        """Drop the connection at once (no TLS close_notify wait, no lingering task)."""
        transport = self.writer.transport
        transport.abort()


async def connect_socket(address: str, port: int) -> socket.socket:
    """A non-blocking TCP socket connected to the already-checked ``address`` (never a name)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (address, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def connect_first(addresses: Sequence[str], port: int) -> tuple[socket.socket, str]:
    """The first of the checked ``addresses`` that accepts; the last error when none does."""
    last: BaseException | None = None
    for address in addresses:
        try:
            return await connect_socket(address, port), address
        except OSError as exc:
            last = exc
    raise last or NetError(ErrorCode.TCP_UNREACHABLE, "no address to connect to")
