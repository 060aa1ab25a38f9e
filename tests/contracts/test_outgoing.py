"""The outgoing email contract: what a send request may carry, and where its outcome goes."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from pydantic import ValidationError

from contracts import SendEmailRequested, make_envelope, parse_envelope
from contracts.outgoing import INLINE_ATTACHMENT_MAX, OutgoingAttachment, send_id
from contracts.subjects import SEND_SENT, STREAMS, send_outcome_subject


def request(**over: Any) -> SendEmailRequested:
    values: dict[str, Any] = {
        "mailbox_id": "mbx_1",
        "idempotency_key": "crm-42",
        "to": [{"name": "Zoë Ünal", "address": "zoe@example.org"}],
        "subject": "Grüße",
        "text": "hello",
    }
    values.update(over)
    return SendEmailRequested.model_validate(values)


def errors_of(**over: Any) -> str:
    with pytest.raises(ValidationError) as info:
        request(**over)
    return str(info.value)


def test_a_request_round_trips_in_its_envelope() -> None:
    body = make_envelope(request(bcc=[{"address": "audit@example.org"}]), "crm").to_bytes()
    parsed = parse_envelope(body, SendEmailRequested).data
    assert parsed.recipients == ["zoe@example.org", "audit@example.org"]
    assert parsed.subject == "Grüße"


def test_refusals_name_what_is_wrong() -> None:
    assert "at least one recipient" in errors_of(to=[])
    assert "text, html or both" in errors_of(text=None)
    assert "idempotency_key" in errors_of(idempotency_key="has space")
    assert "may not be set" in errors_of(headers={"Bcc": "x@example.org"})
    assert "may not be set" in errors_of(headers={"X-Mailwarden-Test": "1"})
    assert "one line" in errors_of(headers={"X-Campaign": "a\r\nBcc: evil@example.org"})
    assert "one line" in errors_of(subject="a\nb")
    assert "address" in errors_of(to=[{"address": "not an address"}])
    assert request(headers={"X-Campaign": "spring", "Reply-To": "desk@example.org"}).headers


def test_attachments_are_inline_or_by_reference_never_both() -> None:
    inline = {"filename": "a.txt", "content_b64": base64.b64encode(b"hi").decode()}
    ref = {"filename": "b.pdf", "object": {"bucket": "MW_OUTGOING", "name": "b.pdf"}}
    assert request(attachments=[inline, ref]).attachments[0].inline_bytes() == b"hi"
    assert "exactly one" in errors_of(attachments=[{**inline, "object": ref["object"]}])
    assert "exactly one" in errors_of(attachments=[{"filename": "c"}])
    assert "base64" in errors_of(attachments=[{"filename": "d", "content_b64": "***"}])
    assert "file name" in errors_of(attachments=[{**inline, "filename": "../etc/passwd"}])
    too_big = base64.b64encode(b"\0" * (INLINE_ATTACHMENT_MAX + 1)).decode()
    with pytest.raises(ValidationError, match="at most"):
        OutgoingAttachment(filename="big.bin", content_b64=too_big)


def test_one_id_per_mailbox_and_key() -> None:
    assert send_id("m1", "k") == send_id("m1", "k")
    assert len({send_id("m1", "k"), send_id("m2", "k"), send_id("m1", "k2")}) == 3


def test_outcomes_are_per_mailbox_in_the_send_stream() -> None:
    subject = send_outcome_subject(SEND_SENT, "mbx_1")
    assert subject == "mailwarden.send.sent.mbx_1"
    assert any(s.name == "MW_SEND" and "mailwarden.send.>" in s.subjects for s in STREAMS)
    with pytest.raises(ValueError):
        send_outcome_subject(SEND_SENT, "a.b")
