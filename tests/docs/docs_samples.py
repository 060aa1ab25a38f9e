"""One realistic instance of every event, to check the published schemas against real envelopes.

A new event type needs a sample here: the docs test names the missing one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from contracts.access import ApiTokenCreated, ApiTokenRevoked, CredentialKeysRotated
from contracts.alerting import (
    AlertMarkedRead,
    AlertPreferencesChanged,
    AlertsDeleted,
    WebhookRegistered,
    WebhookRemoved,
)
from contracts.email import (
    Address,
    Attachment,
    EmailReceived,
    EmailRejected,
    EmailTracked,
    MailboxResyncRequested,
    MailboxSyncFailed,
    MailboxSyncPaused,
    MailboxSyncRecovered,
    RawRef,
    email_event_id,
)
from contracts.errors import ErrorCode, WarningCode
from contracts.events import (
    AlertRaised,
    DeadLettered,
    EmailSettingsChanged,
    Event,
    FieldError,
    MailboxApproved,
    MailboxCreated,
    MailboxSnapshot,
    MailboxStatusChanged,
    MailboxUpdated,
    ProfileCreated,
    ProfileDeleted,
    ProfileSnapshot,
    ProfileUpdated,
    SealedCredentials,
    SettingsSnapshot,
    TestCompleted,
    TestRequested,
)
from contracts.jobs import JobProgress, TestJobCompleted, TestJobProgress, TestJobStarted
from contracts.models import (
    Direction,
    DirectionResult,
    Endpoint,
    IncomingProtocol,
    MailboxRef,
    Owner,
    OwnerKind,
    SealedSecret,
    ServerTarget,
    StepResult,
    TestError,
    TestStatus,
    TestWarning,
    TlsMode,
)
from contracts.outgoing import (
    EmailSendFailed,
    EmailSendUncertain,
    EmailSent,
    EmailSentCopy,
    MailboxSendLoginRefused,
    ObjectRef,
    OutgoingAttachment,
    Recipient,
    RecipientRefusal,
    SendEmailRequested,
)

NOW = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
ANN = Owner(kind=OwnerKind.USER, id="u42", name="Ann Example", email="ann@example.org")
OPS = Owner(kind=OwnerKind.QUEUE, id="q-ops", name="Operations")
SEALED = SealedSecret(kid="k1", nonce="bm9uY2U", ct="Y2lwaGVydGV4dA")
MAILBOX = MailboxRef(
    mailbox_id="mbx_1", email="ann@example.org", owner=ANN, profile_id="prof_1", profile_owner=OPS
)


def _profile() -> ProfileSnapshot:
    return ProfileSnapshot(
        profile_id="prof_1",
        name="Contoso IMAP",
        owner=OPS,
        incoming_protocol=IncomingProtocol.IMAP,
        incoming=Endpoint(host="imap.example.org", port=993, tls=TlsMode.IMPLICIT),
        outgoing=Endpoint(host="smtp.example.org", port=587, tls=TlsMode.STARTTLS),
        sealed_credentials=SealedCredentials(incoming=SEALED),
        updated_at=NOW,
    )


def _mailbox() -> MailboxSnapshot:
    return MailboxSnapshot(
        mailbox_id="mbx_1", email="ann@example.org", owner=ANN, profile_id="prof_1", updated_at=NOW
    )


def _error(code: ErrorCode, step: str) -> TestError:
    return TestError.of(code, step)


def _completed() -> TestCompleted:
    steps = [
        StepResult(name="resolve", ok=True, duration_ms=2.5, facts={"count": 1}),
        StepResult(name="login", ok=False, duration_ms=40.0, error_code=ErrorCode.AUTH_FAILED, detail="NO"),
    ]
    incoming = DirectionResult(
        direction=Direction.INCOMING,
        protocol="imap",
        status=TestStatus.FAILURE,
        error=_error(ErrorCode.AUTH_FAILED, "login"),
        steps=steps,
        warnings=[TestWarning(code=WarningCode.CERT_EXPIRING_SOON, message="expires in 9 days")],
        started_at=NOW,
        duration_ms=42.5,
    )
    outgoing = DirectionResult(
        direction=Direction.OUTGOING,
        protocol="smtp",
        status=TestStatus.SUCCESS,
        started_at=NOW,
        duration_ms=80.0,
    )
    return TestCompleted(
        test_id="t_1",
        mailbox=MAILBOX,
        incoming=incoming,
        outgoing=outgoing,
        started_at=NOW,
        finished_at=NOW + timedelta(seconds=1),
        tester="tester-1",
    )


def _requested() -> TestRequested:
    target = ServerTarget(
        profile_id="prof_1",
        profile_name="Contoso IMAP",
        incoming_protocol=IncomingProtocol.POP3,
        incoming=Endpoint(host="192.0.2.7", port=995, tls=TlsMode.IMPLICIT),
        outgoing=Endpoint(host="smtp.example.org", port=465, tls=TlsMode.IMPLICIT),
    )
    return TestRequested(
        test_id="t_1",
        mailbox=MAILBOX,
        target=target,
        credentials=SealedCredentials(incoming=SEALED, outgoing=SEALED),
        job_id="job_1",
        requested_at=NOW,
    )


def _status() -> MailboxStatusChanged:
    return MailboxStatusChanged(
        mailbox=MAILBOX,
        test_id="t_1",
        incoming_status=TestStatus.FAILURE,
        outgoing_status=TestStatus.SUCCESS,
        enabled_incoming=False,
        enabled_outgoing=True,
        disabled_reason=ErrorCode.AUTH_FAILED,
        incoming_error=_error(ErrorCode.AUTH_FAILED, "login"),
    )


def _alert() -> AlertRaised:
    return AlertRaised(
        alert_id="a_1",
        recipient=ANN,
        level="error",
        code="auth_failed",
        title="Incoming email failed for ann@example.org",
        message="The user name or password was rejected.",
        mailbox_id="mbx_1",
        direction=Direction.INCOMING,
        affected_mailboxes=["mbx_1"],
        first_seen=NOW,
        last_seen=NOW,
    )


EMAIL_ID = email_event_id("mbx_1", 1700000000, 42)
EPISODE = uuid.UUID("6a1f0c1e-2b7d-4c3e-9a55-0d4e1f2a3b4c")


def _received() -> EmailReceived:
    return EmailReceived(
        mailbox=MAILBOX,
        protocol="imap",
        uid=42,
        uidvalidity=1700000000,
        message_id="<order-7@shop.example>",
        from_=[Address(name="Shop", address="orders@shop.example")],
        to=[Address(name="Ann Example", address="ann@example.org")],
        subject="Your order 7",
        date=NOW,
        internal_date=NOW,
        size=48211,
        preview="Thank you for your order.",
        attachments=[Attachment(name="invoice.pdf", content_type="application/pdf", size=40960, part="2")],
        raw=RawRef(bucket="MW_EMAIL_RAW", name=f"mbx_1/{EMAIL_ID}", size=48211, sha256="ab" * 32),
    )


def _sync_failed() -> MailboxSyncFailed:
    return MailboxSyncFailed(
        mailbox=MAILBOX,
        protocol="imap",
        error=_error(ErrorCode.AUTH_FAILED, "auth"),
        episode_id=EPISODE,
        failures=2,
        first_failed_at=NOW,
        next_attempt_at=NOW + timedelta(minutes=5),
    )


def _send_requested() -> SendEmailRequested:
    return SendEmailRequested(
        mailbox_id="mbx_1",
        idempotency_key="crm-case-7-reply-1",
        to=[Recipient(name="Zoë Client", address="zoe@client.example")],
        cc=[Recipient(address="desk@example.org")],
        bcc=[Recipient(address="archive@example.org")],
        subject="Re: Your order 7",
        text="Your order ships today.",
        html="<p>Your order ships today.</p>",
        attachments=[
            OutgoingAttachment(filename="note.txt", content_type="text/plain", content_b64="aGVsbG8="),
            OutgoingAttachment(
                filename="invoice.pdf",
                content_type="application/pdf",
                object=ObjectRef(bucket="MW_OUTGOING", name="invoices/7.pdf"),
            ),
        ],
        in_reply_to="<order-7@shop.example>",
        references=["<order-7@shop.example>"],
        headers={"X-Crm-Case": "7", "Auto-Submitted": "auto-generated"},
    )


REFUSAL = RecipientRefusal(
    address="gone@client.example",
    reply_code=550,
    enhanced_code="5.1.1",
    message="Recipient rejected",
    permanent=True,
)
MESSAGE_ID = "<0b6f3c52-9a0e-4d47-8f1e-6c2d7a5e3b91@example.org>"


PROGRESS = JobProgress(total=3, requested=3, done=2, succeeded=1, failed={"auth_failed": 1})

SAMPLES: dict[str, Callable[[], Event]] = {
    "ProfileCreated": lambda: ProfileCreated(profile=_profile()),
    "ProfileUpdated": lambda: ProfileUpdated(profile=_profile()),
    "ProfileDeleted": lambda: ProfileDeleted(profile_id="prof_1"),
    "EmailSettingsChanged": lambda: EmailSettingsChanged(
        settings=SettingsSnapshot(default_profile_id="prof_1", version=3, updated_at=NOW)
    ),
    "MailboxCreated": lambda: MailboxCreated(mailbox=_mailbox()),
    "MailboxUpdated": lambda: MailboxUpdated(mailbox=_mailbox()),
    "MailboxApproved": lambda: MailboxApproved(mailbox_id="mbx_1", email="ann@example.org", approved_at=NOW),
    "TestRequested": _requested,
    "TestCompleted": _completed,
    "MailboxStatusChanged": _status,
    "AlertRaised": _alert,
    "DeadLettered": lambda: DeadLettered(
        consumer="alert-svc-status",
        subject="mailwarden.mailbox.status_changed",
        stream_seq=17,
        deliveries=1,
        reason="invalid event",
        errors=[FieldError(loc="data.mailbox", msg="Field required")],
        body_b64="e30=",
        body_size=2,
    ),
    "EmailReceived": _received,
    "EmailTracked": lambda: EmailTracked(
        mailbox_id="mbx_1", email_id=EMAIL_ID, system="crm", record_ref="case/7"
    ),
    "EmailRejected": lambda: EmailRejected(
        mailbox_id="mbx_1", email_id=EMAIL_ID, system="crm", reason="no match"
    ),
    "MailboxSyncFailed": _sync_failed,
    "MailboxSyncRecovered": lambda: MailboxSyncRecovered(
        mailbox=MAILBOX,
        protocol="imap",
        episode_id=EPISODE,
        failures=2,
        first_failed_at=NOW,
        recovered_at=NOW + timedelta(minutes=10),
    ),
    "MailboxSyncPaused": lambda: MailboxSyncPaused(mailbox_id=MAILBOX.mailbox_id, paused=True),
    "SendEmailRequested": _send_requested,
    "EmailSent": lambda: EmailSent(
        mailbox=MAILBOX,
        idempotency_key="crm-case-7-reply-1",
        message_id=MESSAGE_ID,
        accepted=["zoe@client.example", "desk@example.org", "archive@example.org"],
        refused=[REFUSAL],
        reply="250 2.0.0 Ok: queued as 4F2A",
        size=48211,
        attempts=1,
        requested_at=NOW,
        sent_at=NOW + timedelta(seconds=1),
    ),
    "EmailSendFailed": lambda: EmailSendFailed(
        mailbox_id="mbx_1",
        mailbox=MAILBOX,
        idempotency_key="crm-case-7-reply-1",
        message_id=MESSAGE_ID,
        error=_error(ErrorCode.RECIPIENT_REFUSED, "rcpt"),
        reply_code=550,
        enhanced_code="5.1.1",
        refused=[REFUSAL],
        attempts=1,
        failed_at=NOW,
    ),
    "EmailSendUncertain": lambda: EmailSendUncertain(
        mailbox=MAILBOX,
        idempotency_key="crm-case-7-reply-1",
        message_id=MESSAGE_ID,
        reason="the sender stopped after handing the message over, before storing the reply",
        data_started_at=NOW,
        detected_at=NOW + timedelta(minutes=1),
    ),
    "EmailSentCopy": lambda: EmailSentCopy(
        mailbox=MAILBOX,
        idempotency_key="crm-case-7-reply-1",
        message_id=MESSAGE_ID,
        folder="Sent",
        saved=True,
        attempts=1,
        copied_at=NOW + timedelta(seconds=2),
    ),
    "MailboxSendLoginRefused": lambda: MailboxSendLoginRefused(
        mailbox=MAILBOX,
        error=_error(ErrorCode.AUTH_FAILED, "connect"),
        login_id="mailbox:mbx_1:v3:profile:prof_1:v2",
        idempotency_key="crm-case-7-reply-1",
        refused_at=NOW,
    ),
    "TestJobStarted": lambda: TestJobStarted(job_id="job_1", profile_id="prof_1", total=3, started_at=NOW),
    "TestJobProgress": lambda: TestJobProgress(
        job_id="job_1", profile_id="prof_1", state="running", progress=PROGRESS
    ),
    "TestJobCompleted": lambda: TestJobCompleted(
        job_id="job_1",
        profile_id="prof_1",
        state="completed",
        progress=PROGRESS,
        started_at=NOW,
        finished_at=NOW + timedelta(minutes=2),
    ),
    "MailboxResyncRequested": lambda: MailboxResyncRequested(
        mailbox_id=MAILBOX.mailbox_id, from_date=(NOW - timedelta(days=30)).date()
    ),
    "WebhookRegistered": lambda: WebhookRegistered(
        webhook_id="wh_3f9c",
        host="hooks.example.org",
        recipient_kind=OwnerKind.USER,
        recipient_id="u42",
        levels=["error"],
    ),
    "WebhookRemoved": lambda: WebhookRemoved(webhook_id="wh_3f9c"),
    "AlertPreferencesChanged": lambda: AlertPreferencesChanged(
        recipient_kind=OwnerKind.USER,
        recipient_id="u42",
        email_levels=["error", "warning"],
        email="it-desk@example.org",
    ),
    "AlertMarkedRead": lambda: AlertMarkedRead(
        alert_id="al_9d2e", recipient_kind=OwnerKind.USER, recipient_id="u42", read=True
    ),
    "AlertsDeleted": lambda: AlertsDeleted(recipient_kind=OwnerKind.USER, recipient_id="u42"),
    "ApiTokenCreated": lambda: ApiTokenCreated(
        token_id="0123456789abcdef",
        subject="crm",
        roles=["integration"],
        mailboxes=["mbx_1"],
        expires_at=NOW + timedelta(days=90),
    ),
    "ApiTokenRevoked": lambda: ApiTokenRevoked(token_id="0123456789abcdef", subject="crm"),
    "CredentialKeysRotated": lambda: CredentialKeysRotated(
        service="mailbox-svc", primary_kid="mailbox-cred-20261203", examined=1200, rotated=1187, unreadable=0
    ),
}
