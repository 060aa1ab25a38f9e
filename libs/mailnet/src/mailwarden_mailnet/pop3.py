"""A POP3 client on the capped :class:`~mailwarden_mailnet.wire.Wire`: CAPA, STLS, AUTH PLAIN or
USER/PASS, STAT, UIDL, LIST, RETR, TOP, DELE, QUIT.

Failures are classified by RFC 2449/3206 response codes (``-ERR [AUTH]``, ``[SYS/TEMP]``,
``[IN-USE]``); a bare ``-ERR`` to the password is a failed login, as RFC 1939 defines it.
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.errors import ErrorCode
from mailwarden_mailnet.classify import pop3_failure, pop3_response_code
from mailwarden_mailnet.errors import NetError, trimmed
from mailwarden_mailnet.login import Login
from mailwarden_mailnet.wire import Wire


@dataclass(frozen=True)
class Capabilities:
    """CAPA's answer: the capability names and the SASL mechanisms (both upper case)."""

    supported: bool
    names: list[str]
    lines: list[str]
    mechanisms: list[str]


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
        raise NetError(ErrorCode.PROTOCOL_VIOLATION, f"not a POP3 reply: {trimmed(line, 80)}")

    async def command(self, text: bytes) -> tuple[bool, bytes]:
        await self.wire.send(text + b"\r\n")
        return await self.status()

    async def multiline(self) -> list[bytes]:
        """The lines of a multi-line reply up to the lone dot, dot-unstuffed (RFC 1939 §3)."""
        lines: list[bytes] = []
        while True:
            line = await self.wire.read_line()
            if line == b".":
                return lines
            lines.append(line[1:] if line.startswith(b"..") else line)

    async def greeting(self) -> bytes:
        line = await self.wire.read_line()
        if line.startswith(b"-ERR"):
            raise NetError(pop3_failure(line[4:].strip(), ErrorCode.SERVER_TEMPORARY_ERROR), trimmed(line))
        if not line.startswith(b"+OK"):
            raise NetError(ErrorCode.PROTOCOL_MISMATCH, "not a POP3 greeting")
        return line

    async def capabilities(self) -> Capabilities:
        ok, _ = await self.command(b"CAPA")
        lines = [ln.decode("ascii", "replace").upper() for ln in await self.multiline()] if ok else []
        mechs = [m for c in lines if c.startswith("SASL ") for m in c[5:].split()]
        return Capabilities(ok, [c.split(" ", 1)[0] for c in lines], lines, mechs)

    async def stls(self, caps: Capabilities) -> None:
        """Ask for STLS; on the go-ahead the caller upgrades the wire (``Wire.start_tls``)."""
        if "STLS" not in caps.names:
            raise NetError(ErrorCode.STARTTLS_UNAVAILABLE, "STLS is not advertised")
        ok, text = await self.command(b"STLS")
        if not ok:
            raise NetError(ErrorCode.STARTTLS_REFUSED, f"-ERR {trimmed(text)}")

    async def authenticate(self, login: Login, caps: Capabilities) -> str:
        """SASL PLAIN where offered, else USER/PASS; the mechanism used, or a classified failure."""
        if "PLAIN" in caps.mechanisms:
            mechanism = "PLAIN"
            ok, text = await self.command(b"AUTH PLAIN " + login.plain_blob())
            if ok and text.startswith(b"+"):
                ok, text = await self.command(login.plain_blob())
        elif "USER" in caps.names or not caps.names:
            mechanism = "USER"
            ok, text = await self.command(b"USER " + login.username.encode())
            if ok:
                ok, text = await self.command(b"PASS " + login.password.get_secret_value().encode())
        else:
            raise NetError(ErrorCode.AUTH_MECHANISM_UNSUPPORTED, "neither SASL PLAIN nor USER offered")
        if not ok:
            raise NetError(
                pop3_failure(text, ErrorCode.AUTH_FAILED), f"-ERR {trimmed(text)}", pop3_response_code(text)
            )
        if text.startswith(b"+"):
            raise NetError(ErrorCode.PROTOCOL_VIOLATION, "unexpected continuation after credentials")
        return mechanism

    async def stat(self) -> tuple[int, int]:
        """(messages, octets) of the maildrop."""
        ok, text = await self.command(b"STAT")
        if not ok:
            raise NetError(
                pop3_failure(text, ErrorCode.INBOX_UNAVAILABLE),
                f"-ERR {trimmed(text)}",
                pop3_response_code(text),
            )
        parts = text.split()
        if len(parts) < 2 or not (parts[0].isdigit() and parts[1].isdigit()):
            raise NetError(ErrorCode.PROTOCOL_VIOLATION, "malformed STAT reply")
        return int(parts[0]), int(parts[1])

    async def _listing(self, verb: bytes) -> dict[int, bytes]:
        ok, text = await self.command(verb)
        if not ok:
            raise NetError(pop3_failure(text, ErrorCode.SERVER_TEMPORARY_ERROR), f"{verb.decode()} -ERR")
        out: dict[int, bytes] = {}
        for line in await self.multiline():
            number, _, value = line.partition(b" ")
            if not number.isdigit() or not value:
                raise NetError(ErrorCode.PROTOCOL_VIOLATION, f"malformed {verb.decode()} line")
            out[int(number)] = value.strip()
        return out

    async def uidl(self) -> dict[int, str]:
        """Message number → unique id (RFC 1939 UIDL: printable ASCII, stable across sessions)."""
        return {n: v.decode("ascii", "replace") for n, v in (await self._listing(b"UIDL")).items()}

    async def sizes(self) -> dict[int, int]:
        """Message number → size in octets (LIST)."""
        listing = await self._listing(b"LIST")
        if not all(v.isdigit() for v in listing.values()):
            raise NetError(ErrorCode.PROTOCOL_VIOLATION, "malformed LIST size")
        return {n: int(v) for n, v in listing.items()}

    async def _message(self, verb: bytes) -> bytes:
        ok, text = await self.command(verb)
        if not ok:
            raise NetError(pop3_failure(text, ErrorCode.SERVER_TEMPORARY_ERROR), f"-ERR {trimmed(text)}")
        return b"\r\n".join(await self.multiline()) + b"\r\n"

    async def retrieve(self, number: int) -> bytes:
        """The whole message (RETR), within the wire's byte budget."""
        return await self._message(b"RETR %d" % number)

    async def headers(self, number: int) -> bytes:
        """The header section only (TOP n 0)."""
        return await self._message(b"TOP %d 0" % number)

    async def delete(self, number: int) -> None:
        ok, text = await self.command(b"DELE %d" % number)
        if not ok:
            raise NetError(pop3_failure(text, ErrorCode.SERVER_TEMPORARY_ERROR), f"DELE -ERR {trimmed(text)}")

    async def quit(self) -> bool:
        ok, _ = await self.command(b"QUIT")
        return ok
