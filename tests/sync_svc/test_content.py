"""What EmailReceived says about awkward messages: attachments, non-UTF-8, malformed, too large."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from sync_helpers import Bus, Mailbox, append

from mailwarden_servers import DovecotServer

pytestmark = pytest.mark.integration

PDF = base64.encodebytes(b"%PDF-1.4 " + bytes(range(256)) * 40).decode().replace("\n", "\r\n")
WITH_ATTACHMENT = (
    "From: =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <jorg@example.org>\r\nTo: Ann <ann@example.org>, bob@example.org\r\n"
    "Cc: carol@example.org\r\nReply-To: desk@example.org\r\nSubject: =?utf-8?q?Rechnung_f=C3=BCr_Juli?=\r\n"
    "Message-ID: <inv-1@example.org>\r\nIn-Reply-To: <q-1@example.org>\r\n"
    "References: <q-0@example.org> <q-1@example.org>\r\nDate: Tue, 01 Dec 2026 10:00:00 +0100\r\n"
    'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    '--b1\r\nContent-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n'
    "Anbei die Rechnung für Juli.\r\n"
    '--b1\r\nContent-Type: application/pdf; name="rechnung.pdf"\r\n'
    'Content-Disposition: attachment; filename="rechnung.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    f"{PDF}--b1--\r\n"
).encode()
LATIN1 = (
    b"From: sender@example.org\r\nTo: ann@example.org\r\nSubject: caf\xe9 ol\xe9\r\n"
    b"Message-ID: <latin@example.org>\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\n"
    b"Cr\xe8me br\xfbl\xe9e pour tous.\r\n"
)
RAW_UTF8 = (
    "From: Zoë <zoe@example.org>\r\nTo: ann@example.org\r\nSubject: Grüße aus Köln\r\n"
    "Message-ID: <utf8@example.org>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nTschüss\r\n"
).encode()
MALFORMED = (
    b"From: sender@example.org\r\nSubject: broken\r\nMessage-ID: <broken@example.org>\r\n"
    b"Content-Type: multipart/mixed; boundary=never-there\r\n\r\nno boundary ever comes\r\n"
)


async def test_attachments_non_utf8_malformed_and_too_large(
    bus: Bus, dovecot: DovecotServer, new_box: Callable[..., Mailbox], sync_service: Any, db_name: str
) -> None:
    box = new_box(process_from=date(2020, 1, 1))
    big = (
        b"From: big@example.org\r\nSubject: huge\r\nMessage-ID: <big@example.org>\r\n\r\n"
        + b"x" * 76 * 1800
        + b"\r\n"
    )
    await asyncio.to_thread(
        append, dovecot, box.user, box.password, [WITH_ATTACHMENT, LATIN1, MALFORMED, big, RAW_UTF8]
    )
    async with sync_service(db_name, sync_max_message_bytes=65_536) as app:
        await bus.enable(box)
        got = {e.data.subject: e.data for e in await bus.wait_emails(box, 5)}
        raw_store = app.state.raw
        invoice = got["Rechnung für Juli"]
        assert invoice.raw is not None
        stored = await raw_store.get(invoice.raw.name)
    assert stored == WITH_ATTACHMENT
    assert invoice.from_[0].name == "Jörg Müller" and invoice.from_[0].address == "jorg@example.org"
    assert [a.address for a in invoice.to] == ["ann@example.org", "bob@example.org"]
    assert [a.address for a in invoice.cc] == ["carol@example.org"]
    assert [a.address for a in invoice.reply_to] == ["desk@example.org"]
    assert invoice.message_id == "<inv-1@example.org>" and invoice.in_reply_to == "<q-1@example.org>"
    assert invoice.references == ["<q-0@example.org>", "<q-1@example.org>"]
    assert invoice.preview == "Anbei die Rechnung für Juli."
    assert invoice.date is not None and invoice.date.utcoffset() is not None
    (pdf,) = invoice.attachments
    assert (pdf.name, pdf.content_type, pdf.part) == ("rechnung.pdf", "application/pdf", "2")
    assert abs(pdf.size - (9 + 256 * 40)) <= 2
    assert invoice.parse_error is None

    latin = got["café olé"]  # raw 8-bit header: not UTF-8, so read as Latin-1 (cp1252)
    assert latin.preview == "Crème brûlée pour tous." and latin.parse_error is None

    utf8 = got["Grüße aus Köln"]  # RFC 6532: UTF-8 right in the header
    assert utf8.from_[0].name == "Zoë" and utf8.preview == "Tschüss"

    broken = got["broken"]
    assert broken.parse_error is not None and "Boundary" in broken.parse_error
    assert broken.raw is not None  # kept whole, for whoever wants to look closer

    huge = got["huge"]
    assert huge.too_large and huge.raw is None and huge.size > 65_536
    assert huge.message_id == "<big@example.org>" and huge.preview == ""
