"""IMAP4rev1 probe: greeting, CAPABILITY, STARTTLS, AUTHENTICATE PLAIN or LOGIN, EXAMINE INBOX, LOGOUT.

Failures are classified by RFC 5530 response codes; literals are read only within the wire's byte
budget, so a ``{99999999999}`` announcement fails at once instead of being waited for.
"""

from __future__ import annotations

import asyncio
import re

from contracts.errors import ErrorCode, WarningCode
from contracts.models import TlsMode
from tester_svc.classify import IMAP_AUTH_CODES, IMAP_SELECT_CODES, imap_failure, imap_response_code
from tester_svc.errors import ProbeError
from tester_svc.probes.base import MAX_CAPS, Session, trimmed
from tester_svc.trace import Facts
from tester_svc.wire import Wire

_LITERAL = re.compile(rb"\{(\d{1,20})\+?\}$")
_EXISTS = re.compile(rb"^\* (\d{1,10}) EXISTS$", re.IGNORECASE)
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d{1,10})\]", re.IGNORECASE)
_QUOTABLE = re.compile(r"^[\x20-\x7e]*$")


class ImapClient:
    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.counter = 0

    async def line(self) -> bytes:
        """One logical response line, literals inlined."""
        line = await self.wire.read_line()
        parts = [line]
        while (m := _LITERAL.search(line)) is not None:
            parts.append(await self.wire.read_exactly(int(m.group(1))))
            line = await self.wire.read_line()
            parts.append(line)
        return b"".join(parts)

    def tag(self) -> bytes:
        self.counter += 1
        return b"T%d" % self.counter

    async def command(self, text: bytes, *, logout: bool = False) -> tuple[str, bytes, list[bytes]]:
        """Send one command; return (OK|NO|BAD, text after the status, untagged lines)."""
        tag = self.tag()
        await self.wire.send(tag + b" " + text + b"\r\n")
        return await self.finish(tag, logout=logout)

    async def finish(self, tag: bytes, *, logout: bool = False) -> tuple[str, bytes, list[bytes]]:
        untagged: list[bytes] = []
        while True:
            line = await self.line()
            if line.startswith(b"* "):
                if line[2:6].upper() == b"BYE " and not logout:
                    code = imap_response_code(line[6:])
                    if code == "UNAVAILABLE":
                        raise ProbeError(ErrorCode.SERVER_TEMPORARY_ERROR, trimmed(line))
                    raise ProbeError(ErrorCode.CONNECTION_LOST, f"the server said BYE: {trimmed(line)}")
                untagged.append(line)
                continue
            if line.startswith(tag + b" "):
                status, _, rest = line[len(tag) + 1 :].partition(b" ")
                word = status.upper().decode("ascii", "replace")
                if word not in ("OK", "NO", "BAD"):
                    raise ProbeError(ErrorCode.PROTOCOL_VIOLATION, f"unknown status {trimmed(status, 20)}")
                return word, rest, untagged
            if line.startswith(b"+"):
                return "+", line[1:].strip(), untagged
            raise ProbeError(ErrorCode.PROTOCOL_VIOLATION, f"unexpected line: {trimmed(line, 80)}")


def _quote(text: str) -> bytes:
    return b'"' + text.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'


def _caps(untagged: list[bytes]) -> list[str]:
    caps: list[str] = []
    for line in untagged:
        if line[:13].upper() == b"* CAPABILITY ":
            caps.extend(t.decode("ascii", "replace").upper() for t in line[13:].split())
    return caps


def _cap_facts(caps: list[str], facts: Facts) -> None:
    facts["capabilities"] = caps[:MAX_CAPS]
    facts["auth_mechanisms"] = [c[5:] for c in caps if c.startswith("AUTH=")][:20]
    facts["starttls"] = "STARTTLS" in caps
    facts["idle"] = "IDLE" in caps
    facts["login_disabled"] = "LOGINDISABLED" in caps


async def _capabilities(session: Session, client: ImapClient, name: str) -> list[str]:
    async with session.step(name) as facts:
        status, rest, untagged = await client.command(b"CAPABILITY")
        if status != "OK":
            raise ProbeError(ErrorCode.PROTOCOL_VIOLATION, f"CAPABILITY {status}: {trimmed(rest)}")
        caps = _caps(untagged)
        _cap_facts(caps, facts)
    return caps


async def _authenticate(session: Session, client: ImapClient, caps: list[str]) -> None:
    login = session.login
    async with session.step("auth") as facts:
        if "AUTH=PLAIN" in caps:
            facts["mechanism"] = "PLAIN"
            tag = client.tag()
            if "SASL-IR" in caps:
                await client.wire.send(tag + b" AUTHENTICATE PLAIN " + login.plain_blob() + b"\r\n")
                status, rest, _ = await client.finish(tag)
            else:
                await client.wire.send(tag + b" AUTHENTICATE PLAIN\r\n")
                status, rest, _ = await client.finish(tag)
                if status == "+":
                    await client.wire.send(login.plain_blob() + b"\r\n")
                    status, rest, _ = await client.finish(tag)
        elif "LOGINDISABLED" in caps:
            raise ProbeError(ErrorCode.AUTH_MECHANISM_UNSUPPORTED, "LOGINDISABLED and no AUTH=PLAIN")
        else:
            password = login.password.get_secret_value()
            if not (_QUOTABLE.match(login.username) and _QUOTABLE.match(password)):
                raise ProbeError(
                    ErrorCode.AUTH_MECHANISM_UNSUPPORTED, "non-ASCII credentials need AUTH=PLAIN"
                )
            facts["mechanism"] = "LOGIN"
            status, rest, _ = await client.command(
                b"LOGIN " + _quote(login.username) + b" " + _quote(password)
            )
        if status == "+":
            raise ProbeError(ErrorCode.PROTOCOL_VIOLATION, "unexpected continuation after credentials")
        if status != "OK":
            code = imap_failure(status, rest, IMAP_AUTH_CODES, ErrorCode.AUTH_FAILED)
            facts["response_code"] = imap_response_code(rest)
            raise ProbeError(code, f"{status} {trimmed(rest)}")


async def _examine(session: Session, client: ImapClient) -> None:
    """EXAMINE (read-only) normally; SELECT only when a send-mode test must delete its message."""
    verb = b"SELECT" if session.target.find_marker else b"EXAMINE"
    async with session.step("inbox") as facts:
        status, rest, untagged = await client.command(verb + b" INBOX")
        if status != "OK":
            facts["response_code"] = imap_response_code(rest)
            raise ProbeError(
                imap_failure(status, rest, IMAP_SELECT_CODES, ErrorCode.INBOX_UNAVAILABLE),
                f"{status} {trimmed(rest)}",
            )
        for line in untagged:
            if (m := _EXISTS.match(line)) is not None:
                facts["message_count"] = int(m.group(1))
            if (m := _UIDVALIDITY.search(line)) is not None:
                facts["uidvalidity"] = int(m.group(1))
        facts["read_only"] = rest.upper().startswith(b"[READ-ONLY]")


async def _find_and_delete(session: Session, client: ImapClient) -> None:
    """Look for the message the SMTP side sent (polling while it is delivered), then delete it.

    Only that message's UIDs are expunged (UID EXPUNGE, RFC 4315); without UIDPLUS it is only
    flagged \\Deleted, so other messages the user flagged are never expunged by us.
    """
    marker = session.target.marker.encode()
    async with session.step("find_message") as facts:
        _, _, untagged = await client.command(b"CAPABILITY")  # logged-in capabilities differ
        caps = _caps(untagged)
        uids: list[bytes] = []
        polls = 0
        loop = asyncio.get_running_loop()
        give_up = loop.time() + session.env.step_timeout_s * 0.8
        while True:
            polls += 1
            await client.command(b"NOOP")
            status, rest, untagged = await client.command(
                b'UID SEARCH HEADER X-Mailwarden-Test "' + marker + b'"'
            )
            if status != "OK":
                raise ProbeError(ErrorCode.PROTOCOL_VIOLATION, f"SEARCH {status}: {trimmed(rest)}")
            uids = [
                u for ln in untagged if ln[:9].upper() == b"* SEARCH " for u in ln[9:].split() if u.isdigit()
            ]
            if uids or loop.time() + 0.25 >= give_up:
                break
            await asyncio.sleep(0.25)
        facts["found"] = bool(uids)
        facts["polls"] = polls
        if not uids:
            return
        uid_set = b",".join(uids[:100])
        status, rest, _ = await client.command(b"UID STORE " + uid_set + b" +FLAGS.SILENT (\\Deleted)")
        if status != "OK":
            raise ProbeError(ErrorCode.INBOX_UNAVAILABLE, f"STORE {status}: {trimmed(rest)}")
        expunged = False
        if "UIDPLUS" in caps:
            status, rest, _ = await client.command(b"UID EXPUNGE " + uid_set)
            expunged = status == "OK"
        facts["deleted"] = expunged


async def imap_dialogue(session: Session, wire: Wire) -> None:
    client = ImapClient(wire)
    preauth = False
    async with session.step("greeting", ErrorCode.GREETING_TIMEOUT) as facts:
        line = await client.line()
        facts["greeting"] = trimmed(line, 120)
        head = line[:10].upper()
        if head.startswith(b"* BYE"):
            raise ProbeError(ErrorCode.SERVER_TEMPORARY_ERROR, f"the server refused: {trimmed(line)}")
        if head.startswith(b"* PREAUTH"):
            if not wire.tls:
                # RFC 3501 PREAUTH on plaintext skips STARTTLS entirely: never accept it.
                raise ProbeError(ErrorCode.PROTOCOL_VIOLATION, "PREAUTH before TLS")
            preauth = True
        elif not head.startswith(b"* OK"):
            raise ProbeError(ErrorCode.PROTOCOL_MISMATCH, "not an IMAP greeting")
        facts["preauth"] = preauth
    caps = await _capabilities(session, client, "capabilities")
    if session.tls_mode is TlsMode.STARTTLS:
        async with session.step("starttls") as facts:
            if "STARTTLS" not in caps:
                raise ProbeError(ErrorCode.STARTTLS_UNAVAILABLE, "STARTTLS is not advertised")
            if "LOGINDISABLED" not in caps:
                session.trace.warn(WarningCode.PLAINTEXT_LOGIN_OFFERED)
            status, rest, _ = await client.command(b"STARTTLS")
            if status != "OK":
                raise ProbeError(ErrorCode.STARTTLS_REFUSED, f"{status} {trimmed(rest)}")
            await session.upgrade(wire, facts)
        caps = await _capabilities(session, client, "capabilities_tls")
    elif session.tls_mode is TlsMode.NONE and "LOGINDISABLED" not in caps:
        session.trace.warn(WarningCode.PLAINTEXT_LOGIN_OFFERED)
    if not preauth:
        await _authenticate(session, client, caps)
    await _examine(session, client)
    if session.target.find_marker:
        await _find_and_delete(session, client)
    async with session.step("logout") as facts:
        status, _, _ = await client.command(b"LOGOUT", logout=True)
        facts["status"] = status
