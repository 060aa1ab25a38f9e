"""Hostile and broken servers: each ends in its exact code, within its deadline, without credentials leaking."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from contracts.errors import ErrorCode
from contracts.models import DirectionResult, Endpoint, IncomingProtocol, TlsMode
from mailwarden_servers import TestCertificates
from tester_svc.runner import Runner

from . import fakes
from .conftest import Behaviour, FakeServer, make_request

STEP_S = 0.3  # per-step deadline in these tests
TEST_S = 3.0  # whole-test deadline
BOUND_S = STEP_S + 1.0  # a step failure must end within its deadline plus scheduling slack

Start = Callable[[Behaviour], Awaitable[FakeServer]]


@pytest.fixture
def hostile_runner(make_runner: Callable[..., Runner]) -> Runner:
    return make_runner(tester_step_timeout_s=STEP_S, tester_test_timeout_s=TEST_S)


async def probe(
    runner: Runner, protocol: str, tls: TlsMode, port: int, **target: Any
) -> tuple[DirectionResult, float]:
    ep = Endpoint(host="mail.test", port=port, tls=tls)
    if protocol == "smtp":
        req = make_request(outgoing=ep, **target)
    else:
        req = make_request(incoming=ep, protocol=IncomingProtocol(protocol), **target)
    t0 = time.monotonic()
    done = await runner.run(req)
    elapsed = time.monotonic() - t0
    result = done.outgoing if protocol == "smtp" else done.incoming
    assert result is not None
    return result, elapsed


def code(result: DirectionResult) -> ErrorCode | None:
    return result.error.code if result.error else None


def no_credentials(fake: FakeServer) -> None:
    data = bytes(fake.received)
    for secret in (b"alice-pw", b"YWxpY2UtcHc", b"AGFsaWNlAGFsaWNlLXB3"):  # plain, base64, SASL PLAIN
        assert secret not in data
    for verb in (b"LOGIN", b"AUTH", b"USER", b"PASS"):
        assert verb not in data.upper()


GREETINGS = {"imap": b"* OK ready\r\n", "pop3": b"+OK ready\r\n", "smtp": b"220 ready\r\n"}
PROTOCOLS = ["imap", "pop3", "smtp"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_never_greets(hostile_runner: Runner, fake_server: Start, protocol: str) -> None:
    fake = await fake_server(fakes.silent)
    result, elapsed = await probe(hostile_runner, protocol, TlsMode.STARTTLS, fake.port)
    assert code(result) is ErrorCode.GREETING_TIMEOUT
    assert result.error is not None and result.error.step == "greeting"
    assert elapsed < BOUND_S
    no_credentials(fake)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_drip_fed_greeting(hostile_runner: Runner, fake_server: Start, protocol: str) -> None:
    fake = await fake_server(fakes.drip(GREETINGS[protocol] * 20, every_s=0.1))
    result, elapsed = await probe(hostile_runner, protocol, TlsMode.STARTTLS, fake.port)
    assert code(result) is ErrorCode.GREETING_TIMEOUT
    assert elapsed < BOUND_S


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_endless_line(hostile_runner: Runner, fake_server: Start, protocol: str) -> None:
    fake = await fake_server(fakes.endless(GREETINGS[protocol][:4]))
    result, elapsed = await probe(hostile_runner, protocol, TlsMode.STARTTLS, fake.port)
    assert code(result) is ErrorCode.RESPONSE_TOO_LONG
    assert elapsed < BOUND_S


@pytest.mark.parametrize(
    ("protocol", "prefix", "line"),
    [
        ("imap", b"* OK ready\r\n", b"* CAPABILITY IMAP4rev1 X\r\n"),
        ("pop3", b"+OK ready\r\n", b"X-CAP\r\n"),
        ("smtp", b"220 ready\r\n", b"250-X-EXT\r\n"),
    ],
)
async def test_endless_short_lines(
    hostile_runner: Runner, fake_server: Start, protocol: str, prefix: bytes, line: bytes
) -> None:
    """Many valid short lines that never end the response: the per-connection byte budget stops them."""
    head = {"imap": b"", "pop3": b"+OK\r\n", "smtp": b""}[protocol]

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fake: FakeServer) -> None:
        writer.write(prefix)
        await fake.read_line(reader)
        await fakes.endless(head, line * 100)(reader, writer, fake)

    fake = await fake_server(run)
    result, elapsed = await probe(hostile_runner, protocol, TlsMode.STARTTLS, fake.port)
    assert code(result) is ErrorCode.RESPONSE_TOO_LONG
    assert result.error is not None and result.error.step == "capabilities"
    assert elapsed < BOUND_S


async def test_huge_imap_literal(hostile_runner: Runner, fake_server: Start) -> None:
    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fake: FakeServer) -> None:
        writer.write(b"* OK ready\r\n")
        await fake.read_line(reader)
        writer.write(b"* CAPABILITY {99999999999}\r\n")
        await writer.drain()
        await fake.drain_forever(reader)

    fake = await fake_server(run)
    result, elapsed = await probe(hostile_runner, "imap", TlsMode.STARTTLS, fake.port)
    assert code(result) is ErrorCode.RESPONSE_TOO_LONG
    assert elapsed < BOUND_S


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_drops_after_credentials(hostile_runner: Runner, fake_server: Start, protocol: str) -> None:
    """Plaintext allowed here on purpose, to reach the login step against a fake."""
    script = {
        "imap": [b"* OK ready\r\n", b"* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR\r\nT1 OK\r\n"],
        "pop3": [b"+OK ready\r\n", b"+OK\r\nSASL PLAIN\r\n.\r\n"],
        "smtp": [b"220 ready\r\n", b"250-x\r\n250 AUTH PLAIN\r\n"],
    }[protocol]

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fake: FakeServer) -> None:
        writer.write(script[0])
        await fake.read_line(reader)
        writer.write(script[1])
        await writer.drain()
        await fake.read_line(reader)  # the credentials
        writer.transport.abort()

    fake = await fake_server(run)
    result, elapsed = await probe(
        hostile_runner, protocol, TlsMode.NONE, fake.port, allow_plaintext_auth=True
    )
    assert code(result) is ErrorCode.CONNECTION_LOST
    assert result.error is not None and result.error.step == "auth"
    assert elapsed < BOUND_S


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_plaintext_on_tls_port(hostile_runner: Runner, fake_server: Start, protocol: str) -> None:
    fake = await fake_server(fakes.greet_then(GREETINGS[protocol]))
    result, elapsed = await probe(hostile_runner, protocol, TlsMode.IMPLICIT, fake.port)
    assert code(result) is ErrorCode.TLS_PROTOCOL_ERROR
    assert result.error is not None and result.error.step == "tls"
    assert elapsed < BOUND_S
    no_credentials(fake)


async def test_silent_tls_port(hostile_runner: Runner, fake_server: Start) -> None:
    fake = await fake_server(fakes.silent)
    result, elapsed = await probe(hostile_runner, "imap", TlsMode.IMPLICIT, fake.port)
    assert code(result) is ErrorCode.GREETING_TIMEOUT
    assert result.error is not None and result.error.step == "tls"
    assert elapsed < BOUND_S


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_http_instead_of_mail(hostile_runner: Runner, fake_server: Start, protocol: str) -> None:
    fake = await fake_server(fakes.greet_then(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
    result, elapsed = await probe(hostile_runner, protocol, TlsMode.STARTTLS, fake.port)
    assert code(result) is ErrorCode.PROTOCOL_MISMATCH
    assert elapsed < BOUND_S
    no_credentials(fake)


@pytest.mark.parametrize(
    ("protocol", "behaviour"),
    [
        ("imap", fakes.imap(caps=b"IMAP4rev1 AUTH=PLAIN")),
        ("pop3", fakes.pop3(capa=b"USER\r\nSASL PLAIN\r\n")),
        ("smtp", fakes.smtp(ehlo=b"250-fake\r\n250 AUTH PLAIN LOGIN\r\n")),
    ],
)
async def test_starttls_not_offered(
    hostile_runner: Runner, fake_server: Start, protocol: str, behaviour: Behaviour
) -> None:
    fake = await fake_server(behaviour)
    result, _ = await probe(hostile_runner, protocol, TlsMode.STARTTLS, fake.port)
    assert code(result) is ErrorCode.STARTTLS_UNAVAILABLE
    assert result.error is not None and result.error.step == "starttls"
    no_credentials(fake)


@pytest.mark.parametrize(
    ("protocol", "behaviour"),
    [
        ("imap", fakes.imap(caps=b"IMAP4rev1 STARTTLS", starttls_reply=b"NO [UNAVAILABLE] no TLS today")),
        ("smtp", fakes.smtp(ehlo=b"250-fake\r\n250 STARTTLS\r\n")),
    ],
)
async def test_starttls_refused(
    hostile_runner: Runner, fake_server: Start, protocol: str, behaviour: Behaviour
) -> None:
    fake = await fake_server(behaviour)
    result, _ = await probe(hostile_runner, protocol, TlsMode.STARTTLS, fake.port)
    assert code(result) is ErrorCode.STARTTLS_REFUSED
    no_credentials(fake)


async def test_starttls_injection(
    hostile_runner: Runner, fake_server: Start, certs: TestCertificates
) -> None:
    """Plaintext sent together with the STARTTLS go-ahead must not be read as if it came over TLS."""
    behaviour = fakes.imap(
        caps=b"IMAP4rev1 STARTTLS",
        starttls_ctx=certs.server_context(),
        after_starttls=b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n",
    )
    fake = await fake_server(behaviour)
    result, _ = await probe(hostile_runner, "imap", TlsMode.STARTTLS, fake.port)
    assert code(result) is ErrorCode.PROTOCOL_VIOLATION
    no_credentials(fake)


async def test_smtp_starttls_injection(hostile_runner: Runner, fake_server: Start) -> None:
    fake = await fake_server(
        fakes.smtp(ehlo=b"250-fake\r\n250 STARTTLS\r\n", starttls_reply=b"220 go ahead\r\n250-AUTH PLAIN")
    )
    result, _ = await probe(hostile_runner, "smtp", TlsMode.STARTTLS, fake.port)
    assert code(result) is ErrorCode.PROTOCOL_VIOLATION
    assert result.error is not None and result.error.step == "starttls"
    no_credentials(fake)


async def test_preauth_on_plaintext(hostile_runner: Runner, fake_server: Start) -> None:
    fake = await fake_server(fakes.greet_then(b"* PREAUTH welcome back\r\n"))
    result, _ = await probe(hostile_runner, "imap", TlsMode.STARTTLS, fake.port)
    assert code(result) is ErrorCode.PROTOCOL_VIOLATION
    no_credentials(fake)


async def test_slow_server_hits_the_test_deadline(
    make_runner: Callable[..., Runner], fake_server: Start
) -> None:
    """Every reply comes within the step deadline, but all of them together exceed the test's."""
    runner = make_runner(tester_step_timeout_s=1.0, tester_test_timeout_s=1.5)
    fake = await fake_server(fakes.imap(delay_s=0.4))
    t0 = time.monotonic()
    result, _ = await probe(runner, "imap", TlsMode.NONE, fake.port, allow_plaintext_auth=True)
    assert code(result) is ErrorCode.TEST_TIMEOUT
    assert result.error is not None and result.error.step in ("auth", "inbox", "logout")
    assert time.monotonic() - t0 < 1.5 + 1.0


async def test_tls_version_refused(hostile_runner: Runner, fake_server: Start) -> None:
    """A server that only speaks TLS <= 1.1 answers our hello with a protocol_version alert."""

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fake: FakeServer) -> None:
        fake.received.extend(await reader.read(5))  # the start of our ClientHello
        writer.write(bytes([0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 70]))  # fatal alert: protocol_version
        await writer.drain()
        await fake.drain_forever(reader)

    fake = await fake_server(run)
    result, elapsed = await probe(hostile_runner, "imap", TlsMode.IMPLICIT, fake.port)
    assert code(result) is ErrorCode.TLS_VERSION_TOO_OLD
    assert elapsed < BOUND_S


async def test_reset_in_handshake(hostile_runner: Runner, fake_server: Start) -> None:
    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fake: FakeServer) -> None:
        await reader.read(5)
        writer.transport.abort()

    fake = await fake_server(run)
    result, elapsed = await probe(hostile_runner, "pop3", TlsMode.IMPLICIT, fake.port)
    assert code(result) is ErrorCode.TLS_HANDSHAKE_FAILED
    assert elapsed < BOUND_S


@pytest.mark.parametrize(
    ("protocol", "behaviour", "expected"),
    [
        ("imap", fakes.imap(login_reply=b"NO [UNAVAILABLE] try later"), ErrorCode.AUTH_TEMPORARY),
        ("imap", fakes.imap(login_reply=b"NO [AUTHENTICATIONFAILED] nope"), ErrorCode.AUTH_FAILED),
        ("imap", fakes.imap(examine_reply=b"NO [NONEXISTENT] no inbox"), ErrorCode.INBOX_UNAVAILABLE),
        ("pop3", fakes.pop3(auth_reply=b"-ERR [IN-USE] locked"), ErrorCode.ACCOUNT_IN_USE),
        ("pop3", fakes.pop3(auth_reply=b"-ERR [SYS/TEMP] later"), ErrorCode.AUTH_TEMPORARY),
        ("pop3", fakes.pop3(auth_reply=b"-ERR [AUTH] wrong"), ErrorCode.AUTH_FAILED),
    ],
)
async def test_response_codes(
    hostile_runner: Runner, fake_server: Start, protocol: str, behaviour: Behaviour, expected: ErrorCode
) -> None:
    fake = await fake_server(behaviour)
    result, _ = await probe(hostile_runner, protocol, TlsMode.NONE, fake.port, allow_plaintext_auth=True)
    assert code(result) is expected


async def test_echoed_password_is_redacted(hostile_runner: Runner, fake_server: Start) -> None:
    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, fake: FakeServer) -> None:
        writer.write(b"* OK ready\r\n")
        await fake.read_line(reader)
        writer.write(b"* CAPABILITY IMAP4rev1\r\nT1 OK\r\n")
        line = await fake.read_line(reader)
        writer.write(b"T2 NO you sent " + line.strip() + b"\r\n")
        await writer.drain()
        await fake.drain_forever(reader)

    fake = await fake_server(run)
    result, _ = await probe(hostile_runner, "imap", TlsMode.NONE, fake.port, allow_plaintext_auth=True)
    assert code(result) is ErrorCode.AUTH_FAILED
    assert "alice-pw" not in result.model_dump_json()
    assert b"alice-pw" in fake.received  # it really was echoed


async def test_no_leaked_sockets_or_tasks(hostile_runner: Runner, fake_server: Start) -> None:
    """Many failing and succeeding runs leave no file descriptor or task behind."""
    servers = [
        await fake_server(fakes.imap()),
        await fake_server(fakes.greet_then(b"* OK ready\r\n")),  # plaintext on a TLS port
        await fake_server(fakes.endless(b"* OK")),
        await fake_server(fakes.silent),
    ]
    modes = [TlsMode.NONE, TlsMode.IMPLICIT, TlsMode.STARTTLS, TlsMode.STARTTLS]

    async def round_() -> None:
        await asyncio.gather(
            *(
                probe(hostile_runner, "imap", mode, fake.port, allow_plaintext_auth=True)
                for fake, mode in zip(servers, modes, strict=True)
            )
        )

    await round_()  # warm up lazily created resources
    await asyncio.sleep(0.1)
    fds, tasks = len(os.listdir("/proc/self/fd")), len(asyncio.all_tasks())
    for _ in range(5):
        await round_()
    await asyncio.sleep(0.1)
    assert len(asyncio.all_tasks()) <= tasks
    assert len(os.listdir("/proc/self/fd")) <= fds + 2  # slack for unrelated session servers
