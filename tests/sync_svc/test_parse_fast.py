"""The fast MIME scan reads what the email package reads, and hands everything unusual to it.

``parse_message`` takes :mod:`sync_svc.mimescan`'s path for well-formed mail and the email
package's (``parse_with_email``) for the rest; both must give the same EmailReceived fields. Every
message below goes through both; the ``FAST`` ones must also really take the fast path (else the
scan could quietly fall back for all mail and this file would prove nothing about speed).
"""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import pytest

from sync_svc import mimescan
from sync_svc.parse import _date, _usual_date, parse_message, parse_with_email

PDF = base64.encodebytes(bytes(range(256)) * 30).decode().replace("\n", "\r\n")
HEAD = (
    "From: =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <jorg@example.org>\r\n"
    'To: Ann <ann@example.org>, bob@example.org, "Smith, John" <js@example.org>,\r\n  J. Random <jr@example.org>\r\n'
    "Cc: carol@example.org\r\nReply-To: desk@example.org\r\nSubject: =?utf-8?q?Rechnung_f=C3=BCr_Juli?=\r\n"
    "Message-ID: <inv-1@example.org>\r\nIn-Reply-To: <q-1@example.org>\r\n"
    "References: <q-0@example.org>\r\n <q-1@example.org>\r\nDate: Tue, 01 Dec 2026 10:00:00 +0100\r\n"
    "MIME-Version: 1.0\r\n"
)
MIXED = (
    HEAD + 'Content-Type: multipart/mixed; boundary="b1"\r\n\r\npreamble\r\n'
    '--b1\r\nContent-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n'
    "Anbei die Rechnung für Juli.\r\n\r\n"
    '--b1\r\nContent-Type: application/pdf; name="rechnung.pdf"\r\n'
    'Content-Disposition: attachment;\r\n filename="rechnung.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    f"{PDF}\r\n--b1--\r\nepilogue\r\n"
)
NESTED = (
    HEAD + "Content-Type: multipart/mixed; boundary=outer\r\n\r\n"
    "--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n"
    "--inner\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    "Cr=E8me br=FBl=E9e,\r\n  pour=20tous =\r\net toutes.\r\n"
    "--inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Cr&egrave;me <b>br&ucirc;l&eacute;e</b></p>\r\n"
    "--inner--\r\n"
    "--outer\r\nContent-Type: image/png\r\nContent-Disposition: inline\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    "iVBORw0KGgo=\r\n"
    "--outer\r\nContent-Type: text/csv; name=data.csv\r\n\r\na,b\r\n1,2\r\n"
    "--outer\r\n\r\nno headers in this part\r\n"
    "--outer--\r\n"
)
HTML_ONLY = (
    HEAD
    + "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.encodebytes("<html><body><h1>Hallo</h1>\n<p>Grüße &amp; mehr</p></body></html>".encode())
    .decode()
    .replace("\n", "\r\n")
)
PLAIN_LF = (
    "From: a@example.org\nTo: b@example.org\nSubject: plain\n  folded subject\nMessage-ID: <lf@example.org>\n"
    "Content-Type: text/plain; format=flowed; charset=us-ascii\n\nJust   some\n\ttext.\n"
)
RAW_UTF8 = (
    "From: Zoë <zoe@example.org>\r\nTo: ann@example.org\r\nSubject: Grüße aus Köln\r\n"
    "Message-ID: <utf8@example.org>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nTschüss\r\n"
).encode()
LATIN1 = (
    b"From: sender@example.org\r\nTo: ann@example.org\r\nSubject: caf\xe9 ol\xe9\r\n"
    b"Message-ID: <latin@example.org>\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\n"
    b"Cr\xe8me br\xfbl\xe9e pour tous.\r\n"
)
UNKNOWN_CHARSET = (
    b"From: a@example.org\r\nContent-Type: text/plain; charset=x-nope\r\n\r\nhello \xff there\r\n"
)
HEADERS_ONLY = b"From: a@example.org\r\nSubject: nothing else\r\n"
NO_TYPE = b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n"
EMPTY_PARTS = (
    b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n"
    b"--x\r\nContent-Type: text/plain\r\n\r\n--x\r\nContent-Type: application/zip\r\n\r\n--x--"
)
FAST = [MIXED.encode(), NESTED.encode(), HTML_ONLY.encode(), PLAIN_LF.encode(), RAW_UTF8, LATIN1,
        UNKNOWN_CHARSET, HEADERS_ONLY, NO_TYPE, EMPTY_PARTS]  # fmt: skip

SLOW = [
    # a delimiter right after a delimiter (the email package drops that part)
    b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n--x\r\n\r\ny\r\n--x--",
    # no boundary parameter, boundary never comes, no close delimiter, close before start
    b"From: a@example.org\r\nContent-Type: multipart/mixed\r\n\r\nbody\r\n",
    b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=never\r\n\r\nno boundary ever\r\n",
    b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\ntext, never closed\r\n",
    b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b--\r\n",
    # a header line that is none, no headers at all, a first line that is a continuation, mbox From
    b"From: a@example.org\r\nthis is no header\r\n\r\nbody\r\n",
    b"\r\njust a body\r\n",
    b" continued\r\nFrom: a@example.org\r\n\r\nbody\r\n",
    b"From someone Tue Dec  1 10:00:00 2026\r\nFrom: a@example.org\r\n\r\nbody\r\n",
    # RFC 2231 file name, an attached message, a digest, lone CRs, an encoded multipart
    (
        b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9.pdf\r\n"
        b"\r\nxx\r\n--b--\r\n"
    ),
    (
        b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        b"Content-Type: message/rfc822\r\n\r\nFrom: inner@example.org\r\nSubject: inner\r\n\r\ninner body\r\n--b--\r\n"
    ),
    b"From: a@example.org\r\nContent-Type: multipart/digest; boundary=b\r\n\r\n--b\r\n\r\nX: y\r\n\r\nz\r\n--b--\r\n",
    b"From: a@example.org\rSubject: old mac\r\n\r\nbody\r\n",
    b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    b"--b\r\n\r\nx\r\n--b--\r\n",
    # addresses getaddresses reads its own way: groups, comments, escapes, no domain
    b'From: a@example.org (Ann)\r\nTo: undisclosed-recipients:;\r\nCc: "A \\"q\\"" <q@example.org>, nobody\r\n\r\nx\r\n',
    # 8-bit bytes in an attachment sized by compat32 through its charset
    b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
    b"Content-Type: application/octet-stream; charset=utf-8\r\n\r\n\xc3\xa9t\xc3\xa9\r\n--b--\r\n",
]


@pytest.mark.parametrize("raw", FAST, ids=lambda r: r[:40].decode("ascii", "replace"))
def test_well_formed_mail_takes_the_fast_path_and_reads_the_same(raw: bytes) -> None:
    assert mimescan.scan(raw) is not None
    for preview in (0, 500, 20):
        assert parse_message(raw, preview) == parse_with_email(raw, preview)


@pytest.mark.parametrize("raw", SLOW, ids=lambda r: r[:60].decode("ascii", "replace"))
def test_unusual_mail_reads_the_same_as_through_the_email_package(raw: bytes) -> None:
    assert parse_message(raw, 500) == parse_with_email(raw, 500)


def test_the_fields_of_a_multipart_message() -> None:
    parsed = parse_message(MIXED.encode(), 500)
    assert parsed.parse_error is None
    assert [(a.name, a.address) for a in parsed.to] == [
        ("Ann", "ann@example.org"),
        ("", "bob@example.org"),
        ("Smith, John", "js@example.org"),
        ("J. Random", "jr@example.org"),
    ]
    assert parsed.from_[0].name == "Jörg Müller" and parsed.subject == "Rechnung für Juli"
    assert parsed.references == ["<q-0@example.org>", "<q-1@example.org>"]
    assert parsed.preview == "Anbei die Rechnung für Juli."
    (pdf,) = parsed.attachments
    assert (pdf.name, pdf.content_type, pdf.part, pdf.size) == (
        "rechnung.pdf",
        "application/pdf",
        "2",
        256 * 30,
    )
    nested = parse_message(NESTED.encode(), 500)
    assert nested.preview == "Crème brûlée, pour tous et toutes."
    assert [(a.part, a.content_type, a.name) for a in nested.attachments] == [
        ("2", "image/png", ""),
        ("3", "text/csv", "data.csv"),
    ]


def test_malformed_mail_keeps_its_precise_error() -> None:
    parsed = parse_message(SLOW[2], 500)
    assert parsed.parse_error == "malformed: MultipartInvariantViolationDefect, StartBoundaryNotFoundDefect"
    assert parse_message(SLOW[6], 500).parse_error is not None


@pytest.mark.parametrize("raw", [MIXED.encode(), NESTED.encode()], ids=["mixed", "nested"])
def test_cut_and_damaged_mail_reads_the_same(raw: bytes) -> None:
    """Every cut of a message, and every line dropped from it, reads the same both ways."""
    for end in range(0, len(raw), 7):
        assert parse_message(raw[:end], 500) == parse_with_email(raw[:end], 500), end
    lines = raw.split(b"\r\n")
    for i in range(len(lines)):
        damaged = b"\r\n".join(lines[:i] + lines[i + 1 :])
        assert parse_message(damaged, 500) == parse_with_email(damaged, 500), lines[i]


def _email_package_date(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def test_dates_read_directly_are_those_of_the_email_package() -> None:
    """The usual form is read without ``parsedate_to_datetime``: same instant and same offset, and
    out-of-range or unusual ones still go to (and get None from) the email package."""
    rng = random.Random(13)
    written = [
        "Tue, 01 Dec 2026 10:00:00 +0000",
        "01 Dec 2026 10:00:00 -0000",
        " Mon, 7 jul 2026 02:44:25 -0700 ",
        "Mon, 31 Feb 2026 02:44:25 -0700",
        "Mon, 30 Jun 2026 24:00:00 +0000",
        "Fri, 30 Jun 2026 23:59:59 +9999",
        "Fri, 30 Jun 0099 23:59:59 +0100",
        "Fri, 30 Xyz 2026 23:59:59 +0530",
        "Fri, 30 Jun 26 23:59:59 +0530",
    ]
    for _ in range(3000):
        written.append(
            f"{rng.choice(['Mon, ', '', 'Xyz, '])}{rng.randint(0, 32)} {rng.choice(['Jan', 'feb', 'MAR', 'Foo'])} "
            f"{rng.randint(1000, 9999)} {rng.randint(0, 25):02d}:{rng.randint(0, 61):02d}:{rng.randint(0, 61):02d} "
            f"{rng.choice('+-')}{rng.randint(0, 25):02d}{rng.randint(0, 60):02d}"
        )
    direct = 0
    for value in written:
        ours, theirs = _date(value), _email_package_date(value)
        assert ours == theirs, value
        assert (ours and ours.utcoffset()) == (theirs and theirs.utcoffset()), value
        direct += _usual_date(value) is not None
    assert direct > 1000  # the direct path was taken, not only the fallback
