"""The email events: one id per message, "from" on the wire, per-mailbox subjects in MW_EMAIL."""

from __future__ import annotations

import json
import uuid

import pytest

from contracts import EmailReceived, email_event_id, make_envelope, parse_envelope
from contracts.email import Address
from contracts.models import MailboxRef, Owner, OwnerKind
from contracts.subjects import STREAMS, email_received_subject


def mailbox() -> MailboxRef:
    owner = Owner(kind=OwnerKind.USER, id="u1", name="Ann")
    return MailboxRef(
        mailbox_id="mbx_1", email="ann@example.org", owner=owner, profile_id="p1", profile_owner=owner
    )


def test_event_id_is_one_per_message_and_mailbox() -> None:
    first = email_event_id("mbx_1", 7, 42)
    assert first == email_event_id("mbx_1", 7, 42)
    assert len({first, email_event_id("mbx_1", 8, 42), email_event_id("mbx_2", 7, 42)}) == 3
    assert email_event_id("mbx_1", None, "00000001abc") != email_event_id("mbx_1", None, "00000002abc")
    assert isinstance(first, uuid.UUID) and first.version == 5


def test_from_travels_as_from() -> None:
    event = EmailReceived(
        mailbox=mailbox(), protocol="imap", uid=3, uidvalidity=9, size=120, from_=[Address(address="a@b.org")]
    )
    body = make_envelope(event, "sync-svc").to_bytes()
    assert json.loads(body)["data"]["from"] == [{"name": "", "address": "a@b.org"}]
    assert parse_envelope(body, EmailReceived).data.from_[0].address == "a@b.org"


def test_received_subject_is_per_mailbox_and_in_the_email_stream() -> None:
    subject = email_received_subject("mbx_1")
    assert subject == "mailwarden.email.received.mbx_1"
    stream = next(s for s in STREAMS if s.name == "MW_EMAIL")
    assert any(subject.startswith(p.removesuffix(">")) for p in stream.subjects)
    for bad in ("a.b", "*", ">", ""):
        with pytest.raises(ValueError):
            email_received_subject(bad)
