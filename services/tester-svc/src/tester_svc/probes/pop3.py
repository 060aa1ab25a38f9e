"""POP3 probe: greeting, CAPA, STLS, AUTH PLAIN or USER/PASS, STAT, QUIT.

Failures are classified by RFC 2449/3206 response codes (``-ERR [AUTH]``, ``[SYS/TEMP]``,
``[IN-USE]``); a bare ``-ERR`` to the password is a failed login, as RFC 1939 defines it.
"""

from __future__ import annotations

from contracts.errors import ErrorCode, WarningCode
from contracts.models import TlsMode
from tester_svc.classify import pop3_failure, pop3_response_code
from tester_svc.errors import ProbeError
from tester_svc.probes.base import MAX_CAPS, Session, trimmed
from tester_svc.trace import Facts
from tester_svc.wire import Wire


class Pop3Client:
    def __init__(self, wire: Wire) -> None:
        self.wire = wire

    async def status(self) -> tuple[bool, bytes]:
        """A one-line reply: (+OK?, text). A ``+ `` SASL continuation counts as OK with text."""
        line = await self.wire.read_line()
        if line.startswith(b"+OK"):
            return True, line[3:].strip()
        if line.startswith(b"-ERR"):
            return False, line[4:].strip()
        if line.startswith(b"+"):
            return True, b"+" + line[1:].strip()
        raise ProbeError(ErrorCode.PROTOCOL_VIOLATION, f"not a POP3 reply: {trimmed(line, 80)}")

    async def command(self, text: bytes) -> tuple[bool, bytes]:
        await self.wire.send(text + b"\r\n")
        return await self.status()

    async def multiline(self) -> list[bytes]:
        lines: list[bytes] = []
        while True:
            line = await self.wire.read_line()
            if line == b".":
                return lines
            lines.append(line[1:] if line.startswith(b"..") else line)


def _cap_facts(caps: list[str], facts: Facts) -> list[str]:
    mechs = [m for c in caps if c.startswith("SASL ") for m in c[5:].split()]
    facts["capabilities"] = caps[:MAX_CAPS]
    facts["auth_mechanisms"] = mechs[:20]
    facts["starttls"] = "STLS" in caps
    facts["user_login"] = "USER" in caps
    return mechs


async def _capa(session: Session, client: Pop3Client, name: str) -> tuple[list[str], list[str]]:
    async with session.step(name) as facts:
        ok, _ = await client.command(b"CAPA")
        caps = [ln.decode("ascii", "replace").upper() for ln in await client.multiline()] if ok else []
        facts["capa_supported"] = ok
        mechs = _cap_facts(caps, facts)
    return [c.split(" ", 1)[0] for c in caps], mechs


async def _authenticate(session: Session, client: Pop3Client, caps: list[str], mechs: list[str]) -> None:
    login = session.login
    async with session.step("auth") as facts:
        if "PLAIN" in mechs:
            facts["mechanism"] = "PLAIN"
            ok, text = await client.command(b"AUTH PLAIN " + login.plain_blob())
            if ok and text.startswith(b"+"):
                ok, text = await client.command(login.plain_blob())
        elif "USER" in caps or not caps:
            facts["mechanism"] = "USER"
            ok, text = await client.command(b"USER " + login.username.encode())
            if ok:
                ok, text = await client.command(b"PASS " + login.password.get_secret_value().encode())
        else:
            raise ProbeError(ErrorCode.AUTH_MECHANISM_UNSUPPORTED, "neither SASL PLAIN nor USER offered")
        if not ok:
            facts["response_code"] = pop3_response_code(text)
            raise ProbeError(pop3_failure(text, ErrorCode.AUTH_FAILED), f"-ERR {trimmed(text)}")
        if text.startswith(b"+"):
            raise ProbeError(ErrorCode.PROTOCOL_VIOLATION, "unexpected continuation after credentials")


async def pop3_dialogue(session: Session, wire: Wire) -> None:
    client = Pop3Client(wire)
    async with session.step("greeting", ErrorCode.GREETING_TIMEOUT) as facts:
        line = await wire.read_line()
        facts["greeting"] = trimmed(line, 120)
        if line.startswith(b"-ERR"):
            raise ProbeError(pop3_failure(line[4:].strip(), ErrorCode.SERVER_TEMPORARY_ERROR), trimmed(line))
        if not line.startswith(b"+OK"):
            raise ProbeError(ErrorCode.PROTOCOL_MISMATCH, "not a POP3 greeting")
    caps, mechs = await _capa(session, client, "capabilities")
    if session.tls_mode is TlsMode.STARTTLS:
        async with session.step("starttls") as facts:
            if "STLS" not in caps:
                raise ProbeError(ErrorCode.STARTTLS_UNAVAILABLE, "STLS is not advertised")
            if "USER" in caps or mechs:
                session.trace.warn(WarningCode.PLAINTEXT_LOGIN_OFFERED)
            ok, text = await client.command(b"STLS")
            if not ok:
                raise ProbeError(ErrorCode.STARTTLS_REFUSED, f"-ERR {trimmed(text)}")
            await session.upgrade(wire, facts)
        caps, mechs = await _capa(session, client, "capabilities_tls")
    elif session.tls_mode is TlsMode.NONE:
        session.trace.warn(WarningCode.PLAINTEXT_LOGIN_OFFERED)
    await _authenticate(session, client, caps, mechs)
    async with session.step("inbox") as facts:
        ok, text = await client.command(b"STAT")
        if not ok:
            facts["response_code"] = pop3_response_code(text)
            raise ProbeError(pop3_failure(text, ErrorCode.INBOX_UNAVAILABLE), f"-ERR {trimmed(text)}")
        parts = text.split()
        if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
            raise ProbeError(ErrorCode.PROTOCOL_VIOLATION, "malformed STAT reply")
        facts["message_count"] = int(parts[0])
        facts["size_octets"] = int(parts[1])
    async with session.step("logout") as facts:
        ok, _ = await client.command(b"QUIT")
        facts["status"] = "OK" if ok else "ERR"
