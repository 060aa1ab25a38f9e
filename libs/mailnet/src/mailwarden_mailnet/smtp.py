"""An SMTP submission client on the capped wire: connect through the egress policy, TLS, AUTH, send.

:func:`open_smtp` resolves the host, checks the port and every address against the policy,
connects to a checked address, does implicit TLS or STARTTLS (verified against the host *name*)
and logs in; every step has a deadline. :meth:`SmtpConnection.send` runs one transaction and
tells apart what the server refused (a reply) from what is unknown: a connection lost or silent
after the final dot raises :class:`DataUncertain`, because the server may have accepted the
message. A connection is reusable (RSET) for the next message of the same login.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from contracts.errors import ErrorCode
from contracts.models import TlsMode
from mailwarden_mailnet.classify import (
    smtp_auth_failure,
    smtp_enhanced,
    smtp_envelope_failure,
    smtp_generic_failure,
)
from mailwarden_mailnet.dial import MailTarget, Timeouts, classified, dial
from mailwarden_mailnet.errors import NetError, trimmed
from mailwarden_mailnet.login import Login
from mailwarden_mailnet.policy import EgressPolicy
from mailwarden_mailnet.resolve import Resolver
from mailwarden_mailnet.tls import handshake_errors
from mailwarden_mailnet.wire import Limits, Wire

_REPLY = re.compile(rb"^(\d{3})([ -]|$)(.*)$", re.DOTALL)
_LEADING_DOT = re.compile(rb"(?m)^\.")


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[bytes, ...]

    @property
    def text(self) -> str:
        return trimmed(self.lines[0] if self.lines else b"", 200)

    @property
    def enhanced(self) -> str | None:
        found = smtp_enhanced(self.lines[0] if self.lines else b"")
        return ".".join(map(str, found)) if found else None

    def __str__(self) -> str:
        return f"{self.code} {self.text}".strip()


class SmtpRefused(NetError):
    """A classified refusal that carries the server's reply."""

    def __init__(
        self, code: ErrorCode, detail: str, reply: Reply, refused: Sequence[tuple[str, Reply]] = ()
    ) -> None:
        super().__init__(code, detail, response_code=str(reply.code))
        self.reply = reply
        self.refused = list(refused)


class DataUncertain(NetError):
    """The whole message went out but no reply came back: it may have been accepted."""


@dataclass
class Transaction:
    """What one message's envelope became: accepted and refused recipients and the final reply."""

    accepted: list[str] = field(default_factory=list)
    refused: list[tuple[str, Reply]] = field(default_factory=list)
    final: Reply | None = None


def dot_stuffed(data: bytes) -> bytes:
    """The DATA payload: CRLF line ends, leading dots doubled, ended by ``CRLF.CRLF``."""
    body = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return _LEADING_DOT.sub(b"..", body) + b".\r\n"


class SmtpConnection:
    """One logged-in submission session; not safe for two transactions at once."""

    def __init__(self, wire: Wire, host: str, timeouts: Timeouts) -> None:
        self.wire = wire
        self.host = host
        self.timeouts = timeouts
        self.extensions: dict[str, str] = {}
        self.closed = False

    # --- replies -------------------------------------------------------------------------------
    async def reply(self, timeout_s: float | None = None) -> Reply:
        """A (possibly multi-line) reply within the step deadline."""
        self.wire.reset_budget()
        lines: list[bytes] = []
        first: int | None = None
        with classified(ErrorCode.STEP_TIMEOUT):
            async with asyncio.timeout(timeout_s or self.timeouts.step_s):
                while True:
                    line = await self.wire.read_line()
                    m = _REPLY.match(line)
                    if m is None:
                        raise NetError(
                            ErrorCode.PROTOCOL_VIOLATION, f"not an SMTP reply: {trimmed(line, 80)}"
                        )
                    code = int(m.group(1))
                    if first is None:
                        first = code
                    elif code != first:
                        raise NetError(ErrorCode.PROTOCOL_VIOLATION, "reply code changed inside a reply")
                    lines.append(m.group(3))
                    if m.group(2) != b"-":
                        return Reply(code, tuple(lines))

    async def command(self, line: bytes) -> Reply:
        with classified(ErrorCode.STEP_TIMEOUT):
            async with asyncio.timeout(self.timeouts.step_s):
                await self.wire.send(line + b"\r\n")
        return await self.reply()

    # --- session -------------------------------------------------------------------------------
    async def ehlo(self, name: str) -> None:
        reply = await self.command(b"EHLO " + name.encode("ascii"))
        if reply.code != 250:
            raise SmtpRefused(smtp_generic_failure(reply.code), f"EHLO {reply}", reply)
        ext: dict[str, str] = {}
        for raw in reply.lines[1:]:
            word, _, params = raw.decode("ascii", "replace").partition(" ")
            ext[word.upper()] = params.strip()
        self.extensions = ext

    async def starttls(self, ctx: ssl.SSLContext, ehlo_name: str) -> None:
        if "STARTTLS" not in self.extensions:
            raise NetError(ErrorCode.STARTTLS_UNAVAILABLE, "STARTTLS is not advertised")
        reply = await self.command(b"STARTTLS")
        if reply.code != 220:
            raise SmtpRefused(ErrorCode.STARTTLS_REFUSED, f"STARTTLS {reply}", reply)
        with classified(ErrorCode.STEP_TIMEOUT), handshake_errors():
            async with asyncio.timeout(self.timeouts.step_s):
                await self.wire.start_tls(ctx, self.host)
        await self.ehlo(ehlo_name)

    async def login(self, login: Login) -> None:
        mechs = self.extensions.get("AUTH", "").upper().split()
        if "PLAIN" in mechs:
            reply = await self.command(b"AUTH PLAIN " + login.plain_blob())
            if reply.code == 334:
                reply = await self.command(login.plain_blob())
        elif "LOGIN" in mechs:
            reply = await self.command(b"AUTH LOGIN")
            if reply.code == 334:
                reply = await self.command(base64.b64encode(login.username.encode()))
            if reply.code == 334:
                reply = await self.command(base64.b64encode(login.password.get_secret_value().encode()))
        else:
            raise NetError(ErrorCode.AUTH_MECHANISM_UNSUPPORTED, "neither AUTH PLAIN nor LOGIN offered")
        if reply.code != 235:
            if reply.code == 334:
                raise NetError(ErrorCode.PROTOCOL_VIOLATION, "unexpected challenge after credentials")
            first = reply.lines[0] if reply.lines else b""
            raise SmtpRefused(smtp_auth_failure(reply.code, first), f"AUTH {reply.code}", reply)

    @property
    def size_limit(self) -> int | None:
        """The SIZE the server advertised (None: none, or 0 = no fixed limit)."""
        value = self.extensions.get("SIZE", "")
        return int(value) if value.isdigit() and int(value) > 0 else None

    @property
    def smtputf8(self) -> bool:
        return "SMTPUTF8" in self.extensions

    # --- one message ---------------------------------------------------------------------------
    async def send(
        self,
        mail_from: str,
        recipients: Sequence[str],
        data: bytes,
        *,
        utf8: bool = False,
        before_data: Callable[[], Awaitable[None]] | None = None,
    ) -> Transaction:
        """One transaction. Refusals of the sender or of every recipient raise :class:`SmtpRefused`
        (after RSET); ``before_data`` runs once the envelope is accepted, just before DATA."""
        if utf8 and not self.smtputf8:
            raise NetError(ErrorCode.SMTPUTF8_UNSUPPORTED, "the server does not offer SMTPUTF8")
        limit = self.size_limit
        if limit is not None and len(data) > limit:
            raise NetError(ErrorCode.MESSAGE_TOO_LARGE, f"{len(data)} bytes; the server takes {limit}")
        params = b""
        if "SIZE" in self.extensions:
            params += b" SIZE=" + str(len(data)).encode()
        if "8BITMIME" in self.extensions:
            params += b" BODY=8BITMIME"
        if utf8:
            params += b" SMTPUTF8"
        mail_cmd = b"MAIL FROM:<" + mail_from.encode() + b">" + params
        rcpt_cmds = [b"RCPT TO:<" + rcpt.encode() + b">" for rcpt in recipients]
        if "PIPELINING" in self.extensions:  # RFC 2920: the envelope in one round trip
            with classified(ErrorCode.STEP_TIMEOUT):
                async with asyncio.timeout(self.timeouts.step_s):
                    await self.wire.send(b"".join(c + b"\r\n" for c in (mail_cmd, *rcpt_cmds)))
            replies = [await self.reply() for _ in range(1 + len(rcpt_cmds))]
        else:
            replies = [await self.command(mail_cmd)]
            if replies[0].code == 250:
                replies += [await self.command(c) for c in rcpt_cmds]
        reply = replies[0]
        if reply.code != 250:
            code = ErrorCode.MESSAGE_TOO_LARGE if reply.code == 552 else None
            first = reply.lines[0] if reply.lines else b""
            await self._reset_quietly()
            raise SmtpRefused(
                code or smtp_envelope_failure(reply.code, first, ErrorCode.SENDER_REFUSED),
                f"MAIL FROM {reply}",
                reply,
            )
        result = Transaction()
        for rcpt, reply in zip(recipients, replies[1:], strict=True):
            if reply.code in (250, 251):
                result.accepted.append(rcpt)
            else:
                result.refused.append((rcpt, reply))
        if not result.accepted:
            await self._reset_quietly()
            last = result.refused[-1][1]
            first = last.lines[0] if last.lines else b""
            code = smtp_envelope_failure(last.code, first, ErrorCode.RECIPIENT_REFUSED)
            raise SmtpRefused(code, "every recipient refused", last, result.refused)
        if before_data is not None:
            await before_data()
        reply = await self.command(b"DATA")
        if reply.code != 354:
            await self._reset_quietly()
            raise SmtpRefused(smtp_generic_failure(reply.code), f"DATA {reply}", reply)
        payload = dot_stuffed(data)
        with classified(ErrorCode.STEP_TIMEOUT):
            async with asyncio.timeout(max(self.timeouts.data_s, self.timeouts.step_s)):
                await self.wire.send(payload)
        # From here the server may have the whole message: no reply means we cannot know.
        try:
            reply = await self.reply(self.timeouts.data_s)
        except NetError as exc:
            self.closed = True
            raise DataUncertain(exc.code, f"no reply after the message was sent ({exc.detail})") from None
        if reply.code != 250:
            code = ErrorCode.MESSAGE_TOO_LARGE if reply.code == 552 else None
            if code is None:
                code = (
                    ErrorCode.SERVER_TEMPORARY_ERROR if 400 <= reply.code < 500 else ErrorCode.MESSAGE_REFUSED
                )
            raise SmtpRefused(code, f"end of data {reply}", reply)
        result.final = reply
        return result

    async def _reset_quietly(self) -> None:
        with contextlib.suppress(NetError):
            await self.command(b"RSET")

    async def reset(self) -> None:
        """RSET: abandon a transaction (not needed after a completed one, RFC 5321 4.1.1.4)."""
        reply = await self.command(b"RSET")
        if reply.code != 250:
            raise SmtpRefused(smtp_generic_failure(reply.code), f"RSET {reply}", reply)

    async def quit(self) -> None:
        """QUIT politely (bounded), then drop the connection whatever happened."""
        if not self.closed:
            with contextlib.suppress(NetError):
                await asyncio.wait_for(self.command(b"QUIT"), 2.0)
        self.abort()

    def abort(self) -> None:
        self.closed = True
        with contextlib.suppress(Exception):
            self.wire.abort()


SmtpTarget = MailTarget
"""Where and how to connect: the profile's outgoing endpoint and its TLS and auth rules."""


async def open_smtp(
    target: SmtpTarget,
    login: Login,
    *,
    policy: EgressPolicy,
    resolver: Resolver,
    tls: Callable[[bool], ssl.SSLContext],
    ehlo_name: str,
    timeouts: Timeouts,
    limits: Limits | None = None,
) -> SmtpConnection:
    """Policy (port), resolve, policy (addresses), TCP, TLS (``dial``), greeting, EHLO, STARTTLS, AUTH."""
    ep = target.endpoint
    wire, ctx = await dial(
        target, policy=policy, resolver=resolver, tls=tls, timeouts=timeouts, limits=limits
    )
    conn = SmtpConnection(wire, ep.host, timeouts)
    try:
        greeting = await conn.reply()
        if greeting.code != 220:
            raise SmtpRefused(smtp_generic_failure(greeting.code), f"greeting {greeting}", greeting)
        await conn.ehlo(ehlo_name)
        if ep.tls is TlsMode.STARTTLS:
            await conn.starttls(ctx, ehlo_name)
        await conn.login(login)
    except BaseException:
        conn.abort()
        raise
    return conn
