"""Small scripted mail servers (asyncio, loopback) for behaviours no real server shows on demand."""

from __future__ import annotations

import asyncio
import ssl

from .conftest import Behaviour, FakeServer


def imap(
    caps: bytes = b"IMAP4rev1 AUTH=PLAIN SASL-IR",
    *,
    login_reply: bytes = b"OK logged in",
    examine_reply: bytes = b"OK [READ-ONLY] done",
    delay_s: float = 0.0,
    starttls_ctx: ssl.SSLContext | None = None,
    starttls_reply: bytes = b"OK begin TLS",
    after_starttls: bytes = b"",
) -> Behaviour:
    """A minimal IMAP server: tagged replies for CAPABILITY, STARTTLS, LOGIN/AUTHENTICATE, EXAMINE, LOGOUT."""

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fake: FakeServer) -> None:
        writer.write(b"* OK fake IMAP ready\r\n")
        while True:
            line = await fake.read_line(reader)
            await asyncio.sleep(delay_s)
            tag, _, rest = line.strip().partition(b" ")
            cmd = rest.split(b" ", 1)[0].upper()
            if cmd == b"CAPABILITY":
                writer.write(b"* CAPABILITY " + caps + b"\r\n" + tag + b" OK done\r\n")
            elif cmd == b"STARTTLS":
                writer.write(tag + b" " + starttls_reply + b"\r\n" + after_starttls)
                await writer.drain()
                if starttls_ctx is not None and starttls_reply.startswith(b"OK"):
                    await writer.start_tls(starttls_ctx)
            elif cmd in (b"LOGIN", b"AUTHENTICATE"):
                writer.write(tag + b" " + login_reply + b"\r\n")
            elif cmd == b"EXAMINE":
                writer.write(
                    b"* 3 EXISTS\r\n* OK [UIDVALIDITY 42] ok\r\n" + tag + b" " + examine_reply + b"\r\n"
                )
            elif cmd == b"LOGOUT":
                writer.write(b"* BYE bye\r\n" + tag + b" OK bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(tag + b" BAD unknown\r\n")
            await writer.drain()

    return run


def pop3(capa: bytes = b"USER\r\nSASL PLAIN\r\n", *, auth_reply: bytes = b"+OK welcome") -> Behaviour:
    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fake: FakeServer) -> None:
        writer.write(b"+OK fake POP3 ready\r\n")
        while True:
            line = await fake.read_line(reader)
            cmd = line.strip().split(b" ", 1)[0].upper()
            if cmd == b"CAPA":
                writer.write(b"+OK\r\n" + capa + b".\r\n")
            elif cmd in (b"AUTH", b"USER", b"PASS"):
                writer.write((auth_reply if cmd != b"USER" else b"+OK") + b"\r\n")
            elif cmd == b"STAT":
                writer.write(b"+OK 2 320\r\n")
            elif cmd == b"QUIT":
                writer.write(b"+OK bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"-ERR unknown\r\n")
            await writer.drain()

    return run


def smtp(
    ehlo: bytes = b"250-fake\r\n250 AUTH PLAIN\r\n", *, starttls_reply: bytes = b"454 4.7.0 TLS not available"
) -> Behaviour:
    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fake: FakeServer) -> None:
        writer.write(b"220 fake ESMTP\r\n")
        while True:
            line = await fake.read_line(reader)
            cmd = line.strip().split(b" ", 1)[0].upper()
            if cmd == b"EHLO":
                writer.write(ehlo)
            elif cmd == b"STARTTLS":
                writer.write(starttls_reply + b"\r\n")
            elif cmd == b"AUTH":
                writer.write(b"235 2.7.0 ok\r\n")
            elif cmd == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()

    return run


def greet_then(greeting: bytes, then: Behaviour | None = None) -> Behaviour:
    """Send ``greeting`` and then hold the connection (or run ``then``)."""

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fake: FakeServer) -> None:
        writer.write(greeting)
        await writer.drain()
        if then is not None:
            await then(reader, writer, fake)
        else:
            await fake.drain_forever(reader)

    return run


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fake: FakeServer) -> None:
    """Accept and never say a word."""
    await fake.drain_forever(reader)


def drip(text: bytes, every_s: float) -> Behaviour:
    """One byte every ``every_s`` seconds: each byte arrives before any per-read timeout would fire."""

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fake: FakeServer) -> None:
        for i in range(len(text)):
            writer.write(text[i : i + 1])
            await writer.drain()
            await asyncio.sleep(every_s)
        await fake.drain_forever(reader)

    return run


def endless(prefix: bytes, chunk: bytes = b"A" * 4096, total: int = 100 * 1024 * 1024) -> Behaviour:
    """``prefix`` then up to ``total`` bytes of ``chunk`` (no line end unless ``chunk`` has one)."""

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fake: FakeServer) -> None:
        writer.write(prefix)
        sent = 0
        while sent < total:
            writer.write(chunk)
            sent += len(chunk)
            await writer.drain()

    return run
