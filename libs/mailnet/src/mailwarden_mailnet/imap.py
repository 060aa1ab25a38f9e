"""An IMAP4rev1 client on the capped :class:`~mailwarden_mailnet.wire.Wire`: just what we need.

Commands, CAPABILITY, AUTHENTICATE PLAIN (SASL-IR or continuation) or LOGIN, SELECT/EXAMINE, a
streamed UID FETCH that keeps literals apart (message bodies are never joined into one line) and
may be pipelined, IDLE, and for a sent mail's copy CREATE, UID SEARCH by header and APPEND. Failures are classified by RFC 5530 response codes; literals are read only within the
wire's byte budget, so a ``{99999999999}`` announcement fails at once instead of being waited for.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from contracts.errors import ErrorCode
from mailwarden_mailnet.classify import IMAP_AUTH_CODES, IMAP_SELECT_CODES, imap_failure, imap_response_code
from mailwarden_mailnet.errors import NetError, trimmed
from mailwarden_mailnet.login import Login
from mailwarden_mailnet.wire import Wire

_LITERAL = re.compile(rb"\{(\d{1,20})\+?\}$")
_EXISTS = re.compile(rb"^\* (\d{1,10}) EXISTS$", re.IGNORECASE)
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d{1,10})\]", re.IGNORECASE)
_UIDNEXT = re.compile(rb"\[UIDNEXT (\d{1,10})\]", re.IGNORECASE)
_FETCH = re.compile(rb"^\* \d{1,10} FETCH \(", re.IGNORECASE)
_FETCH_UID = re.compile(rb"[( ]UID (\d{1,10})", re.IGNORECASE)
_FETCH_SIZE = re.compile(rb"RFC822\.SIZE (\d{1,12})", re.IGNORECASE)
_FETCH_DATE = re.compile(rb'INTERNALDATE "([^"]{1,40})"', re.IGNORECASE)
_FETCH_ITEM = re.compile(rb"(BODY\[[^\]]{0,60}\](?:<\d+>)?) ?$", re.IGNORECASE)
_QUOTABLE = re.compile(r"^[\x20-\x7e]*$")
_SEARCH = re.compile(rb"^\* SEARCH((?: \d{1,10})*)\s*$", re.IGNORECASE)
_ESEARCH = re.compile(rb'^\* ESEARCH \(TAG "([^"]+)"\)(?: UID)?(?: ALL ([0-9:,]+))?', re.IGNORECASE)

Reply = tuple[str, bytes, list[bytes]]


def quote(text: str) -> bytes:
    return b'"' + text.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'


def parse_capabilities(untagged: list[bytes]) -> list[str]:
    caps: list[str] = []
    for line in untagged:
        if line[:13].upper() == b"* CAPABILITY ":
            caps.extend(t.decode("ascii", "replace").upper() for t in line[13:].split())
    return caps


def sequence_set(text: bytes) -> list[int]:
    """``1:3,7`` → [1, 2, 3, 7] (RFC 3501 sequence set of numbers, as ESEARCH answers)."""
    out: list[int] = []
    for part in text.split(b","):
        low, _, high = part.partition(b":")
        a, b = int(low), int(high or low)
        out.extend(range(min(a, b), max(a, b) + 1))
    return out


_CAPABILITY_CODE = re.compile(rb"^(?:\* (?:OK|PREAUTH) )?\[CAPABILITY ([^\]]*)\]", re.IGNORECASE)


def capability_code(text: bytes) -> list[str]:
    """The ``[CAPABILITY ...]`` response code a server may put in its greeting or its OK to a
    login (RFC 3501 7.1): the capabilities without a CAPABILITY round trip; empty when absent."""
    m = _CAPABILITY_CODE.match(text)
    return [t.decode("ascii", "replace").upper() for t in m.group(1).split()] if m else []


@dataclass(frozen=True)
class AuthReply:
    """What the server answered to the credentials (never the credentials themselves)."""

    mechanism: str
    status: str
    text: bytes
    then: bytes | None = None
    """The tag of the command sent right behind the credentials (``authenticate(then=...)``)."""

    @property
    def ok(self) -> bool:
        return self.status == "OK"

    def error(self) -> NetError:
        return NetError(
            imap_failure(self.status, self.text, IMAP_AUTH_CODES, ErrorCode.AUTH_FAILED),
            f"{self.status} {trimmed(self.text)}",
            imap_response_code(self.text),
        )


@dataclass(frozen=True)
class Selected:
    """A mailbox after SELECT/EXAMINE: what the sync needs to know where it stands."""

    exists: int
    uidvalidity: int | None
    uidnext: int | None
    read_only: bool


@dataclass
class FetchItem:
    """One ``* n FETCH`` response: its UID, size, internal date and body sections (literals)."""

    uid: int
    size: int | None = None
    internal_date: str | None = None
    sections: dict[str, bytes] = field(default_factory=dict)


def parse_fetch(parts: list[bytes]) -> FetchItem | None:
    """``[text, literal, text, ...]`` of one FETCH response; None for one without a UID (flag news)."""
    texts = parts[0::2]
    head = b" ".join(texts)
    m = _FETCH_UID.search(head)
    if m is None:
        return None
    item = FetchItem(uid=int(m.group(1)))
    if (s := _FETCH_SIZE.search(head)) is not None:
        item.size = int(s.group(1))
    if (d := _FETCH_DATE.search(head)) is not None:
        item.internal_date = d.group(1).decode("ascii", "replace")
    for i in range(1, len(parts), 2):
        before = _LITERAL.sub(b"", parts[i - 1]).rstrip()
        name = _FETCH_ITEM.search(before + b" ")
        if name is not None:
            item.sections[name.group(1).decode("ascii", "replace").upper()] = parts[i]
    return item


class ImapClient:
    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self.counter = 0
        self._fetching: dict[bytes, tuple[str, bytes] | None] = {}
        """UID FETCHes sent and not yet read to their end: their completion once it came."""
        self._searching: dict[bytes, list[int]] = {}
        """Pipelined UID SEARCHes (:meth:`send_uid_search`) not yet read: the UIDs answered so far."""
        self._searched: dict[bytes, tuple[str, bytes]] = {}
        """Their completions once they came (read by whichever reader saw them)."""

    async def line_parts(self) -> list[bytes]:
        """One logical response line as ``[text, literal, text, ...]`` (literals kept apart)."""
        line = await self.wire.read_line()
        parts = [line]
        while (m := _LITERAL.search(line)) is not None:
            parts.append(await self.wire.read_exactly(int(m.group(1))))
            line = await self.wire.read_line()
            parts.append(line)
        return parts

    async def line(self) -> bytes:
        """One logical response line, literals inlined."""
        return b"".join(await self.line_parts())

    def tag(self) -> bytes:
        self.counter += 1
        return b"T%d" % self.counter

    async def command(self, text: bytes, *, logout: bool = False) -> Reply:
        """Send one command; return (OK|NO|BAD, text after the status, untagged lines)."""
        tag = self.tag()
        await self.wire.send(tag + b" " + text + b"\r\n")
        return await self.finish(tag, logout=logout)

    def _untagged_bye(self, line: bytes, logout: bool) -> None:
        if line[2:6].upper() == b"BYE " and not logout:
            if imap_response_code(line[6:]) == "UNAVAILABLE":
                raise NetError(ErrorCode.SERVER_TEMPORARY_ERROR, trimmed(line))
            raise NetError(ErrorCode.CONNECTION_LOST, f"the server said BYE: {trimmed(line)}")

    def _tagged(self, tag: bytes, line: bytes) -> tuple[str, bytes]:
        """(status, text) when ``line`` completes ``tag``; ``+`` for a continuation; else a violation."""
        if line.startswith(tag + b" "):
            status, _, rest = line[len(tag) + 1 :].partition(b" ")
            word = status.upper().decode("ascii", "replace")
            if word not in ("OK", "NO", "BAD"):
                raise NetError(ErrorCode.PROTOCOL_VIOLATION, f"unknown status {trimmed(status, 20)}")
            return word, rest
        if line.startswith(b"+"):
            return "+", line[1:].strip()
        raise NetError(ErrorCode.PROTOCOL_VIOLATION, f"unexpected line: {trimmed(line, 80)}")

    async def finish(self, tag: bytes, *, logout: bool = False) -> Reply:
        untagged: list[bytes] = []
        while True:
            line = await self.line()
            if line.startswith(b"* "):
                self._untagged_bye(line, logout)
                untagged.append(line)
                continue
            status, rest = self._tagged(tag, line)
            return status, rest, untagged

    async def greeting(self) -> tuple[bytes, bool]:
        """The server's greeting and whether it is PREAUTH (accepted only over TLS)."""
        line = await self.line()
        head = line[:10].upper()
        if head.startswith(b"* BYE"):
            raise NetError(ErrorCode.SERVER_TEMPORARY_ERROR, f"the server refused: {trimmed(line)}")
        if head.startswith(b"* PREAUTH"):
            if not self.wire.tls:
                # RFC 3501 PREAUTH on plaintext skips STARTTLS entirely: never accept it.
                raise NetError(ErrorCode.PROTOCOL_VIOLATION, "PREAUTH before TLS")
            return line, True
        if not head.startswith(b"* OK"):
            raise NetError(ErrorCode.PROTOCOL_MISMATCH, "not an IMAP greeting")
        return line, False

    async def starttls(self, caps: list[str]) -> None:
        """Ask for STARTTLS; on the go-ahead the caller upgrades the wire (``Wire.start_tls``)."""
        if "STARTTLS" not in caps:
            raise NetError(ErrorCode.STARTTLS_UNAVAILABLE, "STARTTLS is not advertised")
        status, rest, _ = await self.command(b"STARTTLS")
        if status != "OK":
            raise NetError(ErrorCode.STARTTLS_REFUSED, f"{status} {trimmed(rest)}")

    async def capabilities(self) -> list[str]:
        status, rest, untagged = await self.command(b"CAPABILITY")
        if status != "OK":
            raise NetError(ErrorCode.PROTOCOL_VIOLATION, f"CAPABILITY {status}: {trimmed(rest)}")
        return parse_capabilities(untagged)

    async def authenticate(self, login: Login, caps: list[str], then: bytes = b"") -> AuthReply:
        """AUTHENTICATE PLAIN where offered (SASL-IR when possible), else LOGIN with quoted strings.

        ``then`` (e.g. ``SELECT INBOX``) goes out in the same write as the credentials (RFC 3501
        5.5: the server answers it once the login is done; one round trip less). Its answer is
        left to read with its tag (``AuthReply.then``); after a failed login it is a refusal.
        """
        tag = self.tag()
        then_tag = self.tag() if then else None
        behind = then_tag + b" " + then + b"\r\n" if then_tag else b""
        if "AUTH=PLAIN" in caps:
            if "SASL-IR" in caps:
                await self.wire.send(tag + b" AUTHENTICATE PLAIN " + login.plain_blob() + b"\r\n" + behind)
                status, rest, _ = await self.finish(tag)
            else:
                await self.wire.send(tag + b" AUTHENTICATE PLAIN\r\n")
                status, rest, _ = await self.finish(tag)
                if status == "+":
                    await self.wire.send(login.plain_blob() + b"\r\n" + behind)
                    status, rest, _ = await self.finish(tag)
                else:
                    then_tag = None  # never sent
            mechanism = "PLAIN"
        elif "LOGINDISABLED" in caps:
            raise NetError(ErrorCode.AUTH_MECHANISM_UNSUPPORTED, "LOGINDISABLED and no AUTH=PLAIN")
        else:
            password = login.password.get_secret_value()
            if not (_QUOTABLE.match(login.username) and _QUOTABLE.match(password)):
                raise NetError(ErrorCode.AUTH_MECHANISM_UNSUPPORTED, "non-ASCII credentials need AUTH=PLAIN")
            await self.wire.send(
                tag + b" LOGIN " + quote(login.username) + b" " + quote(password) + b"\r\n" + behind
            )
            status, rest, _ = await self.finish(tag)
            mechanism = "LOGIN"
        if status == "+":
            raise NetError(ErrorCode.PROTOCOL_VIOLATION, "unexpected continuation after credentials")
        return AuthReply(mechanism, status, rest, then_tag)

    async def select(self, mailbox: bytes = b"INBOX", *, read_only: bool = False) -> Selected:
        """SELECT (or EXAMINE); a refusal is classified (RFC 5530) as inbox or server trouble."""
        verb = b"EXAMINE" if read_only else b"SELECT"
        tag = self.tag()
        await self.wire.send(tag + b" " + verb + b" " + mailbox + b"\r\n")
        return await self.selected(tag)

    async def selected(self, tag: bytes) -> Selected:
        """The answer to a SELECT (or EXAMINE) sent with ``tag``, e.g. behind the login."""
        status, rest, untagged = await self.finish(tag)
        if status != "OK":
            raise NetError(
                imap_failure(status, rest, IMAP_SELECT_CODES, ErrorCode.INBOX_UNAVAILABLE),
                f"{status} {trimmed(rest)}",
                imap_response_code(rest),
            )
        exists = 0
        uidvalidity = uidnext = None
        for line in untagged:
            if (m := _EXISTS.match(line)) is not None:
                exists = int(m.group(1))
            if (m := _UIDVALIDITY.search(line)) is not None:
                uidvalidity = int(m.group(1))
            if (m := _UIDNEXT.search(line)) is not None:
                uidnext = int(m.group(1))
        return Selected(exists, uidvalidity, uidnext, rest.upper().startswith(b"[READ-ONLY]"))

    async def create(self, mailbox: str) -> None:
        """CREATE ``mailbox``; one that exists already ([ALREADYEXISTS], RFC 5530) is fine, one the
        server can never create ([CANNOT], [NOPERM]) is a permanent error."""
        status, rest, _ = await self.command(b"CREATE " + quote(mailbox))
        code = imap_response_code(rest)
        if status == "OK" or code == "ALREADYEXISTS":
            return
        if code in ("CANNOT", "NOPERM"):
            raise NetError(ErrorCode.SERVER_PERMANENT_ERROR, f"CREATE {status} {trimmed(rest)}", code)
        raise NetError(
            imap_failure(status, rest, IMAP_SELECT_CODES, ErrorCode.SERVER_TEMPORARY_ERROR),
            f"CREATE {status} {trimmed(rest)}",
            code,
        )

    async def uid_search_header(self, name: str, value: str) -> list[int]:
        """UIDs in the selected mailbox whose header ``name`` contains ``value``."""
        status, rest, untagged = await self.command(b"UID SEARCH HEADER " + quote(name) + b" " + quote(value))
        if status != "OK":
            raise NetError(ErrorCode.SERVER_TEMPORARY_ERROR, f"SEARCH {status} {trimmed(rest)}")
        uids: list[int] = []
        for line in untagged:
            if (m := _SEARCH.match(line)) is not None:
                uids += [int(u) for u in m.group(1).split()]
        return uids

    async def uid_searches(self, *criteria: bytes, esearch: bool = False) -> list[list[int]]:
        """The UIDs of each ``UID SEARCH criteria``. With ``esearch`` (the server offers ESEARCH,
        RFC 4731) the commands go out together (one round trip) and each answer comes as ranges (a
        short line for 10,000 UIDs) carrying its command's tag: a server may answer pipelined
        searches in any order (Dovecot does), so they are matched by that tag. Without it, one
        after the other."""
        if not esearch:
            return [await self._search(b"UID SEARCH " + c) for c in criteria]
        tags = [self.tag() for _ in criteria]
        await self.wire.send(
            b"".join(
                t + b" UID SEARCH RETURN (ALL) " + c + b"\r\n" for t, c in zip(tags, criteria, strict=True)
            )
        )
        lines: list[bytes] = []
        for tag in tags:
            status, rest, untagged = await self.finish(tag)
            if status != "OK":
                raise NetError(ErrorCode.SERVER_TEMPORARY_ERROR, f"SEARCH {status} {trimmed(rest)}")
            lines += untagged
        found: dict[bytes, list[int]] = {t: [] for t in tags}
        for line in lines:
            if (m := _ESEARCH.match(line)) is not None and m.group(1) in found:
                found[m.group(1)] += sequence_set(m.group(2)) if m.group(2) else []
        return [found[t] for t in tags]

    async def _search(self, command: bytes) -> list[int]:
        status, rest, untagged = await self.command(command)
        if status != "OK":
            raise NetError(ErrorCode.SERVER_TEMPORARY_ERROR, f"SEARCH {status} {trimmed(rest)}")
        uids: list[int] = []
        for line in untagged:
            if (m := _SEARCH.match(line)) is not None:
                uids += [int(u) for u in m.group(1).split()]
        return uids

    async def append(self, mailbox: str, data: bytes, flags: bytes = b"(\\Seen)") -> tuple[str, bytes]:
        """APPEND ``data`` (CRLF lines) to ``mailbox`` as a synchronizing literal; (status, text):
        a NO with [TRYCREATE] means the mailbox does not exist."""
        tag = self.tag()
        await self.wire.send(tag + b" APPEND " + quote(mailbox) + b" " + flags + b" {%d}\r\n" % len(data))
        status, rest, _ = await self.finish(tag)
        if status != "+":
            return status, rest
        await self.wire.send(data + b"\r\n")
        status, rest, _ = await self.finish(tag)
        return status, rest

    async def send_uid_search(self, criteria: bytes) -> bytes:
        """Send ``UID SEARCH RETURN (ALL) criteria`` (ESEARCH, RFC 4731: the answer carries the
        tag) without waiting; its tag, for :meth:`searched`. Sent behind a FETCH, the FETCH's
        reader (:meth:`fetched`) keeps its answer, whenever the server sends it."""
        tag = self.tag()
        await self.wire.send(tag + b" UID SEARCH RETURN (ALL) " + criteria + b"\r\n")
        self._searching[tag] = []
        return tag

    def search_done(self, tag: bytes) -> bool:
        """Whether a reader has seen the completion of :meth:`send_uid_search`'s ``tag``."""
        return tag in self._searched

    async def searched(self, tag: bytes, max_bytes: int = 1_048_576) -> list[int]:
        """The UIDs a :meth:`send_uid_search` found, reading until it completes (call it with no
        FETCH sent before it left unread: only searches are read here)."""
        while tag not in self._searched:
            self.wire.reset_budget(max_bytes)
            first = (await self.line_parts())[0]
            if first.startswith(b"* "):
                self._untagged_bye(first, False)
                self._search_answer(first)
                continue
            other = first.split(b" ", 1)[0]
            if not self._search_completion(other, first):
                self._tagged(tag, first)  # not a search's: a violation
        status, rest = self._searched.pop(tag)
        uids = self._searching.pop(tag)
        if status != "OK":
            raise NetError(ErrorCode.SERVER_TEMPORARY_ERROR, f"SEARCH {status} {trimmed(rest)}")
        return uids

    def _search_answer(self, line: bytes) -> bool:
        """Keep an ESEARCH answer of a pipelined search; False when the line is not one."""
        if (m := _ESEARCH.match(line)) is None or (found := self._searching.get(m.group(1))) is None:
            return False
        found += sequence_set(m.group(2)) if m.group(2) else []
        return True

    def _search_completion(self, tag: bytes, line: bytes) -> bool:
        if tag not in self._searching or tag in self._searched:
            return False
        status, rest = self._tagged(tag, line)
        self._searched[tag] = (status, rest)
        return True

    async def uid_fetch(self, uid_set: bytes, items: bytes, max_bytes: int) -> AsyncIterator[FetchItem]:
        """Stream the FETCH responses of ``UID FETCH uid_set (items)``, one message at a time.

        Each response gets its own byte budget (``max_bytes``), so a long session is never cut
        by a per-connection total, while one oversized message still is.
        """
        tag = await self.send_uid_fetch(uid_set, items)
        async for item in self.fetched(tag, max_bytes):
            yield item

    async def send_uid_fetch(self, uid_set: bytes, items: bytes) -> bytes:
        """Send ``UID FETCH uid_set (items)`` without waiting for its answer; its tag, to read
        the answer with :meth:`fetched`. Sent while an earlier FETCH is still being read, it is
        pipelined (RFC 3501 5.5): the server starts on it as soon as it has answered the
        earlier one, with no round trip in between."""
        tag = self.tag()
        await self.wire.send(tag + b" UID FETCH " + uid_set + b" (" + items + b")\r\n")
        self._fetching[tag] = None
        return tag

    async def fetched(self, tag: bytes, max_bytes: int) -> AsyncIterator[FetchItem]:
        """The FETCH responses until ``tag`` completes. A server may run pipelined FETCHes at
        once (RFC 3501 5.5): a later one's responses are yielded here as they come, and its
        completion is kept for its own read; so are a pipelined search's answer and completion
        (:meth:`send_uid_search`)."""
        while (done := self._fetching.get(tag)) is None:
            self.wire.reset_budget(max_bytes)
            parts = await self.line_parts()
            first = parts[0]
            if first.startswith(b"* "):
                self._untagged_bye(first, False)
                if _FETCH.match(first) and (item := parse_fetch(parts)) is not None:
                    yield item
                elif self._searching:
                    self._search_answer(first)
                continue
            other = first.split(b" ", 1)[0]
            if other in self._fetching and self._fetching[other] is None:
                self._fetching[other] = self._tagged(other, first)
                continue
            if self._search_completion(other, first):
                continue
            self._fetching[tag] = self._tagged(tag, first)  # a continuation; else a violation
        del self._fetching[tag]
        status, rest = done
        if status != "OK":
            raise NetError(
                imap_failure(status, rest, IMAP_SELECT_CODES, ErrorCode.SERVER_TEMPORARY_ERROR),
                f"FETCH {status} {trimmed(rest)}",
            )

    async def idle_start(self) -> bytes:
        """Send IDLE and wait for the go-ahead; returns the tag to close it with :meth:`idle_done`."""
        tag = self.tag()
        await self.wire.send(tag + b" IDLE\r\n")
        while True:
            line = await self.line()
            if line.startswith(b"+"):
                return tag
            if line.startswith(b"* "):
                self._untagged_bye(line, False)
                continue
            status, rest = self._tagged(tag, line)
            raise NetError(ErrorCode.PROTOCOL_VIOLATION, f"IDLE {status} {trimmed(rest)}")

    async def idle_wait(self) -> bytes:
        """The next untagged line while idling (the caller puts a deadline on it)."""
        self.wire.reset_budget()
        line = await self.line()
        if line.startswith(b"* "):
            self._untagged_bye(line, False)
        return line

    async def idle_done(self, tag: bytes) -> None:
        await self.wire.send(b"DONE\r\n")
        status, rest, _ = await self.finish(tag)
        if status != "OK":
            raise NetError(ErrorCode.PROTOCOL_VIOLATION, f"IDLE ended {status} {trimmed(rest)}")
