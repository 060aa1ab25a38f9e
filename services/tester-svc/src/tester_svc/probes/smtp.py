"""SMTP submission probe: greeting, EHLO, STARTTLS, AUTH PLAIN or LOGIN, envelope dry run, QUIT.

The dry run (MAIL FROM and RCPT TO the mailbox's own address, then RSET) proves the account may
send as itself without sending anything. Failures are classified by reply code and RFC 3463
enhanced status code.
"""

from __future__ import annotations

import base64
import re
import uuid
from datetime import UTC, datetime

from contracts.errors import ErrorCode, WarningCode
from contracts.models import TlsMode
from mailwarden_mailnet.classify import smtp_auth_failure, smtp_envelope_failure, smtp_generic_failure
from mailwarden_mailnet.errors import NetError, trimmed
from mailwarden_mailnet.wire import Wire
from tester_svc.probes.base import MAX_CAPS, Session
from tester_svc.trace import Facts

_REPLY = re.compile(rb"^(\d{3})([ -]|$)(.*)$", re.DOTALL)


class SmtpClient:
    def __init__(self, wire: Wire) -> None:
        self.wire = wire

    async def reply(self, mismatch: ErrorCode = ErrorCode.PROTOCOL_VIOLATION) -> tuple[int, list[bytes]]:
        """A (possibly multi-line) reply: its code and text lines."""
        texts: list[bytes] = []
        first: int | None = None
        while True:
            line = await self.wire.read_line()
            m = _REPLY.match(line)
            if m is None:
                raise NetError(mismatch, f"not an SMTP reply: {trimmed(line, 80)}")
            code = int(m.group(1))
            if first is None:
                first = code
            elif code != first:
                raise NetError(ErrorCode.PROTOCOL_VIOLATION, "reply code changed inside a reply")
            texts.append(m.group(3))
            if m.group(2) != b"-":
                return code, texts

    async def command(self, text: bytes) -> tuple[int, list[bytes]]:
        await self.wire.send(text + b"\r\n")
        return await self.reply()


def _ehlo_facts(texts: list[bytes], facts: Facts) -> dict[str, str]:
    ext: dict[str, str] = {}
    for line in texts[1:]:
        word, _, params = line.decode("ascii", "replace").partition(" ")
        ext[word.upper()] = params.strip()
    facts["extensions"] = sorted(ext)[:MAX_CAPS]
    facts["auth_mechanisms"] = ext.get("AUTH", "").upper().split()[:20]
    facts["starttls"] = "STARTTLS" in ext
    size = ext.get("SIZE", "")
    facts["size_limit"] = int(size) if size.isdigit() else None
    return ext


async def _ehlo(session: Session, client: SmtpClient, name: str) -> dict[str, str]:
    async with session.step(name) as facts:
        code, texts = await client.command(b"EHLO " + session.env.ehlo_name.encode())
        if code != 250:
            raise NetError(smtp_generic_failure(code), f"EHLO {code} {trimmed(texts[0])}")
        ext = _ehlo_facts(texts, facts)
    return ext


def _first(texts: list[bytes]) -> bytes:
    return texts[0] if texts else b""


async def _authenticate(session: Session, client: SmtpClient, ext: dict[str, str]) -> None:
    login = session.login
    mechs = ext.get("AUTH", "").upper().split()
    async with session.step("auth") as facts:
        if "PLAIN" in mechs:
            facts["mechanism"] = "PLAIN"
            code, texts = await client.command(b"AUTH PLAIN " + login.plain_blob())
            if code == 334:
                code, texts = await client.command(login.plain_blob())
        elif "LOGIN" in mechs:
            facts["mechanism"] = "LOGIN"
            code, texts = await client.command(b"AUTH LOGIN")
            if code == 334:
                code, texts = await client.command(base64.b64encode(login.username.encode()))
            if code == 334:
                password = login.password.get_secret_value().encode()
                code, texts = await client.command(base64.b64encode(password))
        else:
            raise NetError(ErrorCode.AUTH_MECHANISM_UNSUPPORTED, "neither AUTH PLAIN nor LOGIN offered")
        facts["reply_code"] = code
        if code != 235:
            if code == 334:
                raise NetError(ErrorCode.PROTOCOL_VIOLATION, "unexpected challenge after credentials")
            raise NetError(smtp_auth_failure(code, _first(texts)), f"{code} {trimmed(_first(texts))}")


def _test_message(session: Session) -> bytes:
    email = session.target.mailbox_email
    now = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    lines = [
        f"From: <{email}>",
        f"To: <{email}>",
        "Subject: mailwarden connectivity test",
        f"Date: {now}",
        f"Message-ID: <{uuid.uuid4()}@mailwarden.invalid>",
        f"X-Mailwarden-Test: {session.target.marker}",
        "",
        "This message was sent by mailwarden to test the outgoing server. It can be deleted.",
    ]
    return "\r\n".join(lines).encode() + b"\r\n.\r\n"


async def _envelope(session: Session, client: SmtpClient) -> None:
    email = session.target.mailbox_email.encode()
    async with session.step("envelope") as facts:
        facts["mode"] = session.target.smtp_mode
        code, texts = await client.command(b"MAIL FROM:<" + email + b">")
        facts["mail_from"] = code
        if code != 250:
            failure = smtp_envelope_failure(code, _first(texts), ErrorCode.SENDER_REFUSED)
            raise NetError(failure, f"MAIL FROM {code} {trimmed(_first(texts))}")
        code, texts = await client.command(b"RCPT TO:<" + email + b">")
        facts["rcpt_to"] = code
        if code not in (250, 251):
            failure = smtp_envelope_failure(code, _first(texts), ErrorCode.RECIPIENT_REFUSED)
            raise NetError(failure, f"RCPT TO {code} {trimmed(_first(texts))}")
        if session.target.smtp_mode == "send":
            code, texts = await client.command(b"DATA")
            if code != 354:
                raise NetError(smtp_generic_failure(code), f"DATA {code} {trimmed(_first(texts))}")
            await client.wire.send(_test_message(session))
            code, texts = await client.reply()
            facts["data"] = code
            if code != 250:
                raise NetError(smtp_generic_failure(code), f"message {code} {trimmed(_first(texts))}")
        else:
            code, texts = await client.command(b"RSET")
            facts["rset"] = code
            if code != 250:
                raise NetError(smtp_generic_failure(code), f"RSET {code} {trimmed(_first(texts))}")


async def smtp_dialogue(session: Session, wire: Wire) -> None:
    client = SmtpClient(wire)
    async with session.step("greeting", ErrorCode.GREETING_TIMEOUT) as facts:
        code, texts = await client.reply(mismatch=ErrorCode.PROTOCOL_MISMATCH)
        facts["greeting"] = trimmed(_first(texts), 120)
        facts["reply_code"] = code
        if code != 220:
            raise NetError(smtp_generic_failure(code), f"greeting {code}")
    ext = await _ehlo(session, client, "capabilities")
    if session.tls_mode is TlsMode.STARTTLS:
        async with session.step("starttls") as facts:
            if "STARTTLS" not in ext:
                raise NetError(ErrorCode.STARTTLS_UNAVAILABLE, "STARTTLS is not advertised")
            if "AUTH" in ext:
                session.trace.warn(WarningCode.PLAINTEXT_LOGIN_OFFERED)
            code, texts = await client.command(b"STARTTLS")
            if code != 220:
                raise NetError(ErrorCode.STARTTLS_REFUSED, f"{code} {trimmed(_first(texts))}")
            await session.upgrade(wire, facts)
        ext = await _ehlo(session, client, "capabilities_tls")
    elif session.tls_mode is TlsMode.NONE and "AUTH" in ext:
        session.trace.warn(WarningCode.PLAINTEXT_LOGIN_OFFERED)
    await _authenticate(session, client, ext)
    await _envelope(session, client)
    async with session.step("logout") as facts:
        code, _ = await client.command(b"QUIT")
        facts["reply_code"] = code
