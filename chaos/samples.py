"""Valid events for every subject a service consumes, and malformed variants of them.

The malformed kinds are the ones reliability.md §7 A5 names: a wrong type, a missing field, an
unknown schema version, invalid JSON, bad UTF-8 and a 1 MB body. Each malformed body carries a
marker so a dead letter can be traced back to the message that caused it.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from contracts.envelope import make_envelope
from contracts.events import (
    AlertRaised,
    EmailSettingsChanged,
    Event,
    MailboxCreated,
    MailboxSnapshot,
    MailboxStatusChanged,
    MailboxUpdated,
    ProfileCreated,
    ProfileDeleted,
    ProfileSnapshot,
    ProfileUpdated,
    SettingsSnapshot,
    TestCompleted,
    TestRequested,
)
from contracts.models import Endpoint, MailboxRef, Owner, ServerTarget
from contracts.subjects import alert_subject

KINDS = ("wrong_type", "missing_field", "unknown_version", "invalid_json", "bad_utf8", "one_megabyte")
ONE_MB = 1_000_000


def _owner(oid: str) -> Owner:
    return Owner.model_validate(
        {"kind": "user", "id": oid, "name": f"user {oid}", "email": f"{oid}@example.org"}
    )


def _endpoint(port: int) -> Endpoint:
    return Endpoint.model_validate({"host": "127.0.0.1", "port": port, "tls": "implicit"})


def _profile(pid: str, version: int = 1) -> ProfileSnapshot:
    return ProfileSnapshot.model_validate(
        {
            "profile_id": pid,
            "name": f"profile {pid}",
            "owner": _owner(f"pa{pid}").model_dump(),
            "incoming_protocol": "imap",
            "incoming": _endpoint(993).model_dump(),
            "outgoing": _endpoint(465).model_dump(),
            "version": version,
            "updated_at": datetime.now(UTC),
        }
    )


def _ref(mid: str, pid: str) -> MailboxRef:
    return MailboxRef(
        mailbox_id=mid,
        email=f"{mid}@mail.test",
        owner=_owner(f"o{mid}"),
        profile_id=pid,
        profile_owner=_owner(f"pa{pid}"),
    )


def _mailbox(mid: str, pid: str) -> MailboxSnapshot:
    return MailboxSnapshot.model_validate(
        {
            "mailbox_id": mid,
            "email": f"{mid}@mail.test",
            "owner": _owner(f"o{mid}").model_dump(),
            "profile_id": pid,
            "updated_at": datetime.now(UTC),
        }
    )


def valid_event(subject_kind: str, n: int, closed_port: int) -> tuple[str, Event]:
    """The n-th valid event of one kind, with fresh ids; returns (subject, event)."""
    tag = f"v{n}x{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    pid, mid = f"p{tag}", f"m{tag}"
    event: Event
    if subject_kind == "ProfileCreated":
        event = ProfileCreated(profile=_profile(pid))
    elif subject_kind == "ProfileUpdated":
        event = ProfileUpdated(profile=_profile(pid, version=2))
    elif subject_kind == "ProfileDeleted":
        event = ProfileDeleted(profile_id=pid)
    elif subject_kind == "EmailSettingsChanged":
        event = EmailSettingsChanged(settings=SettingsSnapshot(version=n + 1, updated_at=now))
    elif subject_kind == "MailboxCreated":
        event = MailboxCreated(mailbox=_mailbox(mid, pid))
    elif subject_kind == "MailboxUpdated":
        event = MailboxUpdated(mailbox=_mailbox(mid, pid))
    elif subject_kind == "MailboxStatusChanged":
        event = MailboxStatusChanged.model_validate(
            {
                "mailbox": _ref(mid, pid).model_dump(),
                "test_id": f"t{tag}",
                "incoming_status": "success",
                "outgoing_status": "success",
                "enabled_incoming": True,
                "enabled_outgoing": True,
            }
        )
    elif subject_kind == "TestRequested":
        # A closed loopback port: the tester answers tcp_refused at once, without a server.
        target = ServerTarget.model_validate(
            {
                "profile_id": pid,
                "profile_name": "p",
                "incoming_protocol": "imap",
                "incoming": _endpoint(closed_port).model_dump(),
                "outgoing": _endpoint(closed_port).model_dump(),
                "connect_timeout_s": 2,
            }
        )
        event = TestRequested(
            test_id=f"t{tag}",
            mailbox=_ref(mid, pid),
            target=target,
            allowed_ports=[closed_port],
            requested_at=now,
        )
    elif subject_kind == "TestCompleted":
        event = TestCompleted(
            test_id=f"t{tag}", mailbox=_ref(mid, pid), started_at=now, finished_at=now, tester="chaos"
        )
    elif subject_kind == "AlertRaised":
        event = AlertRaised.model_validate(
            {
                "alert_id": f"a{tag}",
                "recipient": _owner(f"o{mid}").model_dump(),
                "level": "information",
                "code": "success",
                "title": "t",
                "message": "m",
                "first_seen": now,
                "last_seen": now,
            }
        )
        return alert_subject("user", f"o{mid}", "information"), event
    else:
        raise ValueError(subject_kind)
    return event.SUBJECT, event


CONSUMED = (
    "ProfileCreated",
    "ProfileUpdated",
    "ProfileDeleted",
    "EmailSettingsChanged",
    "MailboxCreated",
    "MailboxUpdated",
    "MailboxStatusChanged",
    "TestRequested",
    "TestCompleted",
    "AlertRaised",
)


@dataclass(frozen=True)
class Malformed:
    kind: str
    marker: str
    body: bytes


def malformed(event: Event, kind: str, rng: random.Random) -> Malformed:
    """One malformed body derived from a valid event; ``marker`` identifies it in a dead letter."""
    marker = uuid.uuid4().hex
    doc: dict[str, Any] = json.loads(make_envelope(event, "chaos").to_bytes())
    doc["correlation_id"] = marker
    if kind == "wrong_type":
        # A value the field's type cannot take in any mode (pydantic would turn True into 1).
        fields = sorted(k for k, v in doc["data"].items() if v is not None)
        field = rng.choice(fields)
        value = doc["data"][field]
        doc["data"][field] = (
            "not an object"
            if isinstance(value, dict)
            else "not a list"
            if isinstance(value, list)
            else [1, 2]
            if isinstance(value, str)
            else "not a number"
        )
        body = json.dumps(doc).encode()
    elif kind == "missing_field":
        required = [k for k, f in type(event).model_fields.items() if f.is_required()]
        del doc["data"][rng.choice(required)]
        body = json.dumps(doc).encode()
    elif kind == "unknown_version":
        doc["schema_version"] = type(event).VERSION + rng.randint(1, 50)
        body = json.dumps(doc).encode()
    elif kind == "invalid_json":
        text = json.dumps(doc)
        body = text[: rng.randint(1, len(text) - 1)].encode()
    elif kind == "bad_utf8":
        body = json.dumps(doc).encode().replace(marker.encode(), marker.encode() + b"\xff\xfe", 1)
    elif kind == "one_megabyte":
        doc["padding"] = ""
        doc["padding"] = "x" * (ONE_MB - len(json.dumps(doc)))
        body = json.dumps(doc).encode()
    else:
        raise ValueError(kind)
    return Malformed(kind, marker, body)


Builder = Callable[[str, int, int], tuple[str, Event]]
