"""Parse only what EmailReceived needs: headers, a capped text preview and the attachment list.

``email.parser.BytesParser`` with ``policy.compat32`` is several times faster than the default
policy (no header objects are built); we decode the few headers we publish ourselves. Parsing
never raises: a message the parser chokes on, or one whose structure is broken, gives a
``parse_error`` and whatever could be read, so it never blocks the mailbox.
"""

from __future__ import annotations

import html
import quopri
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email._encoded_words import decode_b
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.utils import getaddresses, parsedate_to_datetime

from contracts.email import Address, Attachment
from sync_svc.mimescan import Leaf, scan

MAX_REFERENCES = 100
MAX_ADDRESSES = 500
MAX_ATTACHMENTS = 200
MAX_HEADER = 2000
_TAGS = re.compile(r"<[^>]{0,2000}>")
_SPACE = re.compile(r"\s+")
_REF = re.compile(r"<[^<>\s]{1,995}>")
_LWS = re.compile(r"[ \t\r\n]+")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDR = rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_ADDRESS = re.compile(
    r"[ \t\r\n]*(?:"
    r'(?:"(?P<q>[^"\\\r\n]*)"|(?P<p>[^"<>()\\,;:@\[\]]*?))[ \t\r\n]*<(?P<a>' + _ADDR + r")>"
    r"|(?P<b>" + _ADDR + r")"
    r")?[ \t\r\n]*(?:,|\Z)"
)
TEXT_SCAN_BYTES = 1_048_576  # of a text part, at most this much is decoded for the preview
# Defects that mean the structure could not be read as written (not cosmetic ones).
_STRUCTURAL = {
    "NoBoundaryInMultipartDefect",
    "StartBoundaryNotFoundDefect",
    "CloseBoundaryNotFoundDefect",
    "MissingHeaderBodySeparatorDefect",
    "MultipartInvariantViolationDefect",
    "InvalidMultipartContentTransferEncodingDefect",
}


@dataclass
class Parsed:
    message_id: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    from_: list[Address] = field(default_factory=list)
    to: list[Address] = field(default_factory=list)
    cc: list[Address] = field(default_factory=list)
    reply_to: list[Address] = field(default_factory=list)
    subject: str = ""
    date: datetime | None = None
    preview: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    parse_error: str | None = None


def _text(value: str | None, limit: int = MAX_HEADER) -> str:
    """An RFC 2047-decoded header value, on one line, cut at ``limit``."""
    if not value:
        return ""
    if "=?" not in value:  # no encoded word: decode_header would give the text back as is
        return " ".join(value.split())[:limit]  # split() and \s agree on what white space is
    try:
        decoded = str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError, AssertionError):
        decoded = value
    return _SPACE.sub(" ", decoded).strip()[:limit]


def _raw8(value: str) -> str:
    """Raw 8-bit header bytes (the parser keeps them as surrogates): UTF-8 (RFC 6532), else Latin-1."""
    try:
        raw = value.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return value
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", "replace")


def _raw_values(msg: Message, name: str) -> list[str]:
    """A header's values as written (``get`` would wrap 8-bit ones in an unreadable Header)."""
    wanted = name.lower()
    return [_raw8(str(v)) for k, v in msg.raw_items() if k.lower() == wanted]


def _bytes8(value: bytes) -> str:
    """What :func:`_raw8` gives for the same header bytes: UTF-8 (RFC 6532), else Latin-1 (cp1252)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("cp1252", "replace")


Values = Callable[[str], list[str]]
"""A header's values by name (lower case), decoded as :func:`_raw8` does."""


def _simple_addresses(values: list[str]) -> list[tuple[str, str]] | None:
    """``getaddresses`` for lists of ``addr``, ``Name <addr>`` and ``"Name" <addr>`` (its slow part);
    None for anything else (groups, comments, escapes, routes), which ``getaddresses`` reads."""
    out: list[tuple[str, str]] = []
    for value in values:
        pos, end = 0, len(value)
        while pos < end:
            m = _ADDRESS.match(value, pos)
            if m is None or m.end() == pos:
                return None
            pos = m.end()
            if m.group("a") is not None:
                quoted = m.group("q")
                name = quoted if quoted is not None else " ".join(w for w in _LWS.split(m.group("p")) if w)
                out.append((name, m.group("a")))
            elif m.group("b") is not None:
                out.append(("", m.group("b")))
    return out


def _addresses(values: Values, name: str) -> list[Address]:
    raw = values(name)
    pairs = _simple_addresses(raw)
    out: list[Address] = []
    for display, addr in pairs if pairs is not None else getaddresses(raw):
        addr = addr.strip()[:320]
        if not addr:
            continue
        out.append(Address(name=_text(display, 300), address=addr))
        if len(out) >= MAX_ADDRESSES:
            break
    return out


_RFC5322_DATE = re.compile(
    r"(?:[A-Za-z]{3}, )?(\d{1,2}) ([A-Za-z]{3}) ([1-9]\d{3}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})"
)
_MONTHS = {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}


def _usual_date(value: str) -> datetime | None:
    """The form nearly every mailer writes (``Tue, 01 Dec 2026 10:00:00 +0100``), read directly:
    what ``parsedate_to_datetime`` gives for it at a fifth of its cost; None for anything else."""
    m = _RFC5322_DATE.fullmatch(value.strip())
    month = _MONTHS.get(m.group(2).lower()) if m else None
    if m is None or month is None:
        return None
    day, _, year, hour, minute, second, sign, tzh, tzm = m.groups()
    offset = int(tzh) * 3600 + int(tzm) * 60
    try:  # "-0000" (no zone known) is naive from parsedate_to_datetime, then UTC in _date
        tz = (
            UTC
            if sign == "-" and not offset
            else timezone(timedelta(seconds=-offset if sign == "-" else offset))
        )
        return datetime(int(year), month, int(day), int(hour), int(minute), int(second), tzinfo=tz)
    except ValueError:  # out of range: the email package decides (it gives None too)
        return None


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    if (usual := _usual_date(value)) is not None:
        return usual
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _ids(value: str | None) -> list[str]:
    return _REF.findall(value or "")[:MAX_REFERENCES]


def _headers(values: Values, out: Parsed) -> None:
    def one(name: str) -> str | None:
        found = values(name)
        return found[0] if found else None

    message_id = one("message-id")
    mid = _ids(message_id)
    out.message_id = mid[0] if mid else (_text(message_id, 998) or None)
    irt = _ids(one("in-reply-to"))
    out.in_reply_to = irt[0] if irt else None
    out.references = _ids(one("references"))
    out.from_ = _addresses(values, "from")[:50]
    out.to = _addresses(values, "to")
    out.cc = _addresses(values, "cc")
    out.reply_to = _addresses(values, "reply-to")[:50]
    out.subject = _text(one("subject"))
    out.date = _date(one("date"))


def _message_values(msg: Message) -> Values:
    return lambda name: _raw_values(msg, name)


def _decoded_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "us-ascii"
    try:
        return payload.decode(charset, "replace")
    except LookupError:  # an unknown charset name
        return payload.decode("utf-8", "replace")


def _estimated_size(part: Message) -> int:
    """The decoded size without decoding: base64 is 3 bytes per 4 characters."""
    raw = part.get_payload(decode=False)
    if not isinstance(raw, str):
        return 0
    cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if cte == "base64":
        return len(raw.replace("\r", "").replace("\n", "").rstrip("=")) * 3 // 4
    return len(raw)


def _leaves(msg: Message, number: str = "") -> Iterator[tuple[Message, str]]:
    """Leaf parts with their IMAP part numbers (1, 2, 2.1 ...); an attached message is one leaf."""
    if msg.is_multipart() and msg.get_content_type() != "message/rfc822":
        children = msg.get_payload()
        for i, child in enumerate(children if isinstance(children, list) else [], 1):
            if isinstance(child, Message):
                yield from _leaves(child, f"{number}.{i}" if number else str(i))
    else:
        yield msg, number or "1"


def _walk(msg: Message, preview_chars: int, out: Parsed) -> None:
    text_plain: str | None = None
    text_html: str | None = None
    for part, number in _leaves(msg):
        ctype = part.get_content_type()
        disposition = str(part.get("Content-Disposition", "")).split(";", 1)[0].strip().lower()
        filename = part.get_filename()
        if ctype.startswith("multipart/"):  # a multipart whose boundary never came: no part to list
            continue
        if disposition == "attachment" or filename or not ctype.startswith("text/"):
            if len(out.attachments) < MAX_ATTACHMENTS:
                name = _text(filename, 300)
                size = _estimated_size(part)
                out.attachments.append(
                    Attachment(name=name, content_type=ctype[:200], size=size, part=number)
                )
            continue
        if ctype == "text/plain" and text_plain is None and preview_chars:
            text_plain = _decoded_text(part)
        elif ctype == "text/html" and text_html is None and preview_chars:
            text_html = html.unescape(_TAGS.sub(" ", _decoded_text(part)))
    out.preview = _preview(text_plain, text_html, preview_chars)


def _leaf_text(leaf: Leaf) -> str:
    """The start of a text part, decoded as compat32's ``get_payload(decode=True)`` decodes it."""
    data = leaf.body
    cut = len(data) > TEXT_SCAN_BYTES
    if cut:
        data = data[:TEXT_SCAN_BYTES]
    if leaf.cte == "quoted-printable":
        data = quopri.decodestring(data[: data.rfind(b"\n") + 1] if cut else data)
    elif leaf.cte == "base64":
        joined = b"".join(data.splitlines())
        data, _ = decode_b(joined[: len(joined) // 4 * 4] if cut else joined)
    charset = leaf.charset or "us-ascii"
    try:
        return data.decode(charset, "replace")
    except LookupError:  # an unknown charset name
        return data.decode("utf-8", "replace")


def _leaf_size(leaf: Leaf) -> int:
    if leaf.cte == "base64":
        return len(leaf.body.replace(b"\r", b"").replace(b"\n", b"").rstrip(b"=")) * 3 // 4
    return len(leaf.body)


def _preview(text_plain: str | None, text_html: str | None, preview_chars: int) -> str:
    body = text_plain if text_plain is not None else text_html or ""
    # Collapse white space only in what can reach the preview (bodies may be megabytes).
    return " ".join(body[: preview_chars * 2].split())[:preview_chars]


def _fast(raw: bytes, preview_chars: int) -> Parsed | None:
    """The message read through :func:`sync_svc.mimescan.scan`; None when it must go through email."""
    scanned = scan(raw)
    if scanned is None:
        return None
    out = Parsed()
    by_name: dict[str, list[bytes]] = {}
    for key, value in scanned.headers:
        by_name.setdefault(key, []).append(value)
    _headers(lambda name: [_bytes8(v) for v in by_name.get(name, ())], out)
    text_plain: str | None = None
    text_html: str | None = None
    for leaf in scanned.leaves:
        ctype = leaf.content_type
        if leaf.disposition == "attachment" or leaf.filename or not ctype.startswith("text/"):
            if len(out.attachments) < MAX_ATTACHMENTS:
                if not leaf.body.isascii():  # compat32 sizes such a body by its text in the charset
                    return None
                name = _text(leaf.filename, 300)
                out.attachments.append(
                    Attachment(name=name, content_type=ctype[:200], size=_leaf_size(leaf), part=leaf.number)
                )
            continue
        if ctype == "text/plain" and text_plain is None and preview_chars:
            text_plain = _leaf_text(leaf)
        elif ctype == "text/html" and text_html is None and preview_chars:
            text_html = html.unescape(_TAGS.sub(" ", _leaf_text(leaf)))
    out.preview = _preview(text_plain, text_html, preview_chars)
    return out


def parse_message(raw: bytes, preview_chars: int) -> Parsed:
    """Headers, preview and attachments of a whole message: the fast scan, else the email package."""
    try:
        fast = _fast(raw, preview_chars)
    except Exception:  # the scan is not supposed to raise; the email package then has its say
        fast = None
    return fast if fast is not None else parse_with_email(raw, preview_chars)


def parse_with_email(raw: bytes, preview_chars: int) -> Parsed:
    """The same through ``email`` (compat32): any message, with its structural defects."""
    out = Parsed()
    try:
        # Headers first: a single-part message (most mail) needs no MIME parse of its body.
        msg = BytesParser(policy=policy.compat32).parsebytes(raw, headersonly=True)
        if msg.get_content_maintype() in ("multipart", "message"):
            msg = BytesParser(policy=policy.compat32).parsebytes(raw)
    except Exception as exc:  # the parser is not supposed to raise; a message must not block us
        out.parse_error = f"unparsable message ({type(exc).__name__})"
        return out
    try:
        _headers(_message_values(msg), out)
        _walk(msg, preview_chars, out)
    except Exception as exc:
        out.parse_error = f"unreadable structure ({type(exc).__name__})"
        return out
    defects = sorted({type(d).__name__ for p in msg.walk() for d in p.defects} & _STRUCTURAL)
    if not msg.keys():
        defects.insert(0, "NoHeaders")
    if defects:
        out.parse_error = "malformed: " + ", ".join(defects)
    return out


def parse_headers(raw_headers: bytes) -> Parsed:
    """Headers only (a message over the size cap: the server sent its header section)."""
    out = Parsed()
    try:
        msg = BytesHeaderParser(policy=policy.compat32).parsebytes(raw_headers)
        _headers(_message_values(msg), out)
    except Exception as exc:
        out.parse_error = f"unreadable headers ({type(exc).__name__})"
    return out
