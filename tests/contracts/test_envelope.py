"""The envelope is our API's outer shape: every way a message can be wrong gets a named field."""

from __future__ import annotations

import gc
import json
import weakref
from datetime import UTC, datetime

import pytest

from contracts import EVENT_TYPES, EnvelopeError, MailboxApproved, make_envelope, parse_envelope
from contracts.subjects import alert_subject


def approved() -> MailboxApproved:
    return MailboxApproved(mailbox_id="mbx_1", email="ann@example.org", approved_at=datetime.now(UTC))


def test_round_trip_keeps_identity_and_data() -> None:
    env = make_envelope(approved(), "mailbox-svc", correlation_id="req-7")
    back = parse_envelope(env.to_bytes(), MailboxApproved)
    assert back == env
    assert back.type == "MailboxApproved" and back.schema_version == 1
    assert back.occurred_at.tzinfo is not None


@pytest.mark.parametrize(
    ("body", "reason", "field"),
    [
        (b"\xff\xfe", "body is not UTF-8", "body"),
        (b"{not json", "body is not JSON", "body"),
        (b"[1, 2]", "body is not a JSON object", "body"),
        (b'{"type": "Nope"}', "wrong event type", "type"),
    ],
)
def test_undecodable_bodies_are_named(body: bytes, reason: str, field: str) -> None:
    with pytest.raises(EnvelopeError) as err:
        parse_envelope(body, MailboxApproved)
    assert err.value.reason == reason
    assert [e.loc for e in err.value.errors] == [field]


def test_newer_schema_version_is_refused() -> None:
    doc = json.loads(make_envelope(approved(), "x").to_bytes())
    doc["schema_version"] = 2
    with pytest.raises(EnvelopeError) as err:
        parse_envelope(json.dumps(doc), MailboxApproved)
    assert err.value.errors[0].loc == "schema_version"


def test_each_bad_field_is_named() -> None:
    doc = json.loads(make_envelope(approved(), "x").to_bytes())
    doc["data"]["email"] = "not-an-address"
    doc["data"]["extra"] = 1
    del doc["producer"]
    with pytest.raises(EnvelopeError) as err:
        parse_envelope(json.dumps(doc), MailboxApproved)
    assert {e.loc for e in err.value.errors} == {"data.email", "data.extra", "producer"}


def test_every_event_type_is_registered_once() -> None:
    assert {"ProfileCreated", "MailboxApproved", "TestRequested", "TestCompleted", "AlertRaised"} <= set(
        EVENT_TYPES
    )
    for name, cls in EVENT_TYPES.items():
        assert cls.TYPE == name and cls.SUBJECT.startswith("mailwarden.")


def test_alert_subject_refuses_tokens_that_would_widen_it() -> None:
    assert alert_subject("user", "u-1", "error") == "mailwarden.alerts.user.u-1.error"
    for bad in ("a.b", "*", ">", "a b", ""):
        with pytest.raises(ValueError):
            alert_subject("user", bad, "error")


def test_an_event_types_envelope_model_outlives_garbage_collection() -> None:
    """pydantic keeps ``Envelope[X]`` only weakly: without our own reference every collection
    dropped it and the next event built the class (and its schema) again."""
    event = MailboxApproved(mailbox_id="mbx_gc", email="gc@example.org", approved_at=datetime.now(UTC))
    model = weakref.ref(type(make_envelope(event, "test")))
    for _ in range(3):
        gc.collect()
        assert model() is not None
        assert type(make_envelope(event, "test")) is model()
        assert type(parse_envelope(make_envelope(event, "test").to_bytes(), MailboxApproved)) is model()
