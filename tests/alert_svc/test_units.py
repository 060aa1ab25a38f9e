"""Pure logic: who gets what, the wording, alert identity and webhook signatures."""

from __future__ import annotations

from alert_svc_helpers import PROFILE_OWNER, later, mailbox_ref, user

from alert_svc import rules
from alert_svc.channels.signing import sign, verify
from alert_svc.domain import Draft
from contracts.errors import ErrorCode, WarningCode
from contracts.models import Direction
from contracts.testing import status_failed, status_succeeded


def test_profile_scope_error_tells_the_mailbox_owner_no_action_is_needed() -> None:
    event = status_failed(
        mailbox_ref("mb1", user("u1")), "t1", ErrorCode.CERT_EXPIRED, direction=Direction.OUTGOING
    )
    fan = rules.fan_out(event, rules.OrgPolicy(), "Contoso IMAP")
    [mine] = fan.drafts
    [(failure, theirs)] = fan.profile_errors
    assert failure.profile_scope and mine.recipient.id == "u1" and theirs.recipient == PROFILE_OWNER
    assert mine.title == "Email cannot be sent for the mailbox mb1@example.com"
    assert "No action is required from you" in mine.message
    assert "No action is required" not in theirs.message
    assert "Contoso IMAP" in theirs.message and "disabled for outgoing email" in theirs.message
    assert mine.key != theirs.key and mine.direction is Direction.OUTGOING


def test_mailbox_scope_error_with_retry_and_owner_notification_off() -> None:
    event = status_failed(mailbox_ref("mb1", user("u1")), "t1", ErrorCode.AUTH_FAILED, retry_at=later(5))
    fan = rules.fan_out(event, rules.OrgPolicy(notify_mailbox_owner=False), "P")
    assert fan.drafts == []
    [(failure, theirs)] = fan.profile_errors
    assert not failure.profile_scope and "A retry is scheduled at" in theirs.message


def test_not_approved_goes_to_the_mailbox_owner_once() -> None:
    event = status_failed(mailbox_ref("mb1", user("u1")), "t1", ErrorCode.MAILBOX_NOT_APPROVED)
    [draft] = rules.fan_out(event, rules.OrgPolicy(), "P").drafts
    assert draft.recipient.id == "u1" and draft.direction is None and draft.code == "mailbox_not_approved"
    assert "not been approved" in draft.title
    [draft] = rules.fan_out(event, rules.OrgPolicy(notify_mailbox_owner=False), "P").drafts
    assert draft.recipient == PROFILE_OWNER


def test_success_and_warnings_and_level_filter() -> None:
    event = status_succeeded(
        mailbox_ref("mb1", user("u1")), "t1", (WarningCode.WEAK_TLS, WarningCode.WEAK_TLS)
    )
    drafts = rules.fan_out(event, rules.OrgPolicy(), "P").drafts
    assert [(d.level, d.recipient.id) for d in drafts] == [("information", "u1"), ("warning", "admin1")]
    assert drafts[1].mailbox_id is None and drafts[1].affected == ("mb1",)
    assert [d.level for d in rules.allowed(drafts, rules.OrgPolicy())] == ["information"]


def test_alert_ids_are_stable_per_cause_and_occurrence() -> None:
    a = Draft(
        user("u1"), "error", "mailbox", "auth_failed", "t", "m", "r", "p1", "mb1", None, Direction.INCOMING
    )
    b = Draft(
        user("u1"), "error", "mailbox", "auth_failed", "t2", "m2", "r", "p1", "mb1", None, Direction.INCOMING
    )
    assert a.key == b.key == "user:u1|mailbox:mb1|auth_failed|incoming"
    assert a.alert_id("t1") == b.alert_id("t1") != a.alert_id("t2")


def test_signature_rejects_tampering_other_secrets_and_replays() -> None:
    body = b'{"id": "1"}'
    sig = sign(b"secret", 1_000_000, body)
    assert sig.startswith("sha256=") and verify(b"secret", "1000000", body, sig, now=1_000_010)
    assert not verify(b"secret", "1000000", body + b" ", sig, now=1_000_010)
    assert not verify(b"other", "1000000", body, sig, now=1_000_010)
    assert not verify(b"secret", "1000001", body, sig, now=1_000_010)
    assert not verify(b"secret", "1000000", body, sig, now=1_000_000 + 301)
    assert not verify(b"secret", "soon", body, sig, now=1_000_010)
