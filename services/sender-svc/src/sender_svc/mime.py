"""The message itself, built with the standard library's ``email`` package.

From is the mailbox (display name: its owner's name); Bcc is never written (envelope only);
Message-ID is derived from the send id on the mailbox's domain and Date is the request's time, so
every attempt sends the same bytes. Non-ASCII display names and subjects are RFC 2047 encoded;
an address whose local part is not ASCII needs SMTPUTF8 (the message is then written as UTF-8);
a non-ASCII domain is written as IDNA.
"""

from __future__ import annotations

import email.policy
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime

from contracts.outgoing import OutgoingAttachment, Recipient, SendEmailRequested

QP = "quoted-printable"


class _Headers(HeaderRegistry):
    """The standard header registry, but each header's class is made once: the stock one builds
    a new class with ``type()`` for every header it parses (a tenth of a message's build)."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls


_FACTORY = _Headers()
SMTP = email.policy.SMTP.clone(header_factory=_FACTORY)
SMTPUTF8 = email.policy.SMTPUTF8.clone(header_factory=_FACTORY)


class AddressError(ValueError):
    """An address the message cannot carry; ``field`` names it (``to.0.address``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Built:
    data: bytes
    recipients: list[str]
    utf8: bool
    """True when an address needs SMTPUTF8."""


def ascii_domain(address: str, field: str) -> tuple[str, bool]:
    """``local@domain`` with the domain as IDNA; and whether the local part needs SMTPUTF8."""
    local, _, domain = address.rpartition("@")
    if not local or not domain:
        raise AddressError(field, "not an email address")
    try:
        idna = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise AddressError(field, "the domain is not a valid host name") from None
    labels = idna.split(".")
    if len(labels) < 2 or any(
        not lab or len(lab) > 63 or lab.startswith("-") or lab.endswith("-") for lab in labels
    ):
        raise AddressError(field, "the domain is not a valid host name")
    if any(not (ch.isalnum() or ch == "-") for lab in labels for ch in lab):
        raise AddressError(field, "the domain is not a valid host name")
    if (
        any(ch in local for ch in ' "(),:;<>@[\\]')
        or local.startswith(".")
        or local.endswith(".")
        or ".." in local
    ):
        raise AddressError(field, "the local part is not a valid dot-atom")
    return f"{local}@{idna}", not local.isascii()


def checked_recipients(req: SendEmailRequested) -> tuple[list[str], bool]:
    """Every envelope recipient (IDNA domains), once; refuses the bad ones by field."""
    seen: dict[str, None] = {}
    utf8 = False
    for name, group in (("to", req.to), ("cc", req.cc), ("bcc", req.bcc)):
        for i, rcpt in enumerate(group):
            address, needs = ascii_domain(rcpt.address, f"{name}.{i}.address")
            utf8 = utf8 or needs
            seen.setdefault(address, None)
    return list(seen), utf8


def message_id(send_uuid: uuid.UUID, mailbox_email: str) -> str:
    domain = mailbox_email.rpartition("@")[2].encode("idna").decode("ascii").lower()
    return f"<{send_uuid}@{domain}>"


def _header_address(rcpt: Recipient, field: str) -> Address:
    address, _ = ascii_domain(rcpt.address, field)
    local, _, domain = address.rpartition("@")
    return Address(display_name=rcpt.name, username=local, domain=domain)


def build(
    req: SendEmailRequested,
    *,
    from_email: str,
    from_name: str,
    msg_id: str,
    date: datetime,
    attachments: Mapping[int, bytes],
) -> Built:
    """The RFC 5322 bytes (CRLF) of ``req``; ``attachments`` holds each attachment's bytes by index."""
    recipients, utf8 = checked_recipients(req)
    sender, sender_utf8 = ascii_domain(from_email, "mailbox_id")
    utf8 = utf8 or sender_utf8
    policy = SMTPUTF8 if utf8 else SMTP
    msg = EmailMessage(policy=policy)
    local, _, domain = sender.rpartition("@")
    msg["From"] = Address(display_name=from_name, username=local, domain=domain)
    if req.to:
        msg["To"] = [_header_address(r, f"to.{i}.address") for i, r in enumerate(req.to)]
    if req.cc:
        msg["Cc"] = [_header_address(r, f"cc.{i}.address") for i, r in enumerate(req.cc)]
    msg["Subject"] = req.subject
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = msg_id
    if req.in_reply_to:
        msg["In-Reply-To"] = req.in_reply_to
    if req.references:
        msg["References"] = " ".join(req.references)
    for name, value in req.headers.items():
        msg[name] = value
    # Quoted-printable keeps the message 7-bit: it needs no 8BITMIME and survives any relay.
    if req.text is not None:
        msg.set_content(req.text, subtype="plain", charset="utf-8", cte=QP)
        if req.html is not None:
            msg.add_alternative(req.html, subtype="html", charset="utf-8", cte=QP)
    else:
        msg.set_content(req.html or "", subtype="html", charset="utf-8", cte=QP)
    for i, att in enumerate(req.attachments):
        _attach(msg, att, attachments[i])
    return Built(msg.as_bytes(policy=policy), recipients, utf8)


def _attach(msg: EmailMessage, att: OutgoingAttachment, data: bytes) -> None:
    maintype, _, subtype = att.content_type.partition("/")
    if att.content_id is not None:
        html = msg.get_body(("html",))
        if isinstance(html, EmailMessage):
            html.add_related(
                data, maintype=maintype, subtype=subtype, cid=f"<{att.content_id}>", filename=att.filename,
                disposition="inline",
            )  # fmt: skip
            return
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=att.filename)


def estimated_size(base: int, object_sizes: list[int]) -> int:
    """The message size once Object Store attachments (known by size only) are base64 inside it."""
    return base + sum(((n + 56) // 57) * 78 + 300 for n in object_sizes)
