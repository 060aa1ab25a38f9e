"""Building a TestRequested for one mailbox: target from the profile, credentials re-sealed for transit."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from contracts.events import ProfileSnapshot, SettingsSnapshot, SmtpMode, TestRequested
from contracts.models import CredentialSource, DeliveryMethod, Direction, MailboxRef, ServerTarget
from mailbox_svc.credentials import (
    CredentialsRedirected,
    CredentialsUnreadable,
    for_transit,
    profile_for_transit,
)
from mailbox_svc.documents import MailboxDoc, PendingTest
from mailwarden_runtime.crypto import KeyRing


class TestRefused(Exception):
    """This mailbox cannot be tested now; ``code`` and ``field`` say why."""

    __test__ = False

    def __init__(self, code: str, message: str, field: str | None = None, status: int = 409) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.status = status


REDIRECTED = (
    "the profile's server (host, port, TLS mode or certificate checks) changed since the password "
    "was entered: enter it again"
)


@dataclass(frozen=True)
class Rings:
    at_rest: KeyRing
    transit: KeyRing
    transit_ttl_s: float = 3600.0


def new_test_id() -> str:
    return uuid.uuid4().hex


def job_test_id(job_id: str, mailbox_id: str) -> str:
    """Deterministic per (job, mailbox): a batch expanded twice after a crash requests one test."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"mailwarden-job:{job_id}:{mailbox_id}").hex


def applicable_directions(doc: MailboxDoc) -> list[str]:
    out = []
    if doc.incoming_delivery is not DeliveryMethod.NONE:
        out.append(Direction.INCOMING.value)
    if doc.outgoing_delivery is not DeliveryMethod.NONE:
        out.append(Direction.OUTGOING.value)
    return out


def mailbox_ref(doc: MailboxDoc, profile: ProfileSnapshot) -> MailboxRef:
    """Who a test's request and result are about: the mailbox and its profile's owner."""
    return MailboxRef(
        mailbox_id=doc.id,
        email=doc.email,
        owner=doc.owner,
        profile_id=profile.profile_id,
        profile_owner=profile.owner,
    )


def target_of(profile: ProfileSnapshot) -> ServerTarget:
    adv = profile.advanced
    return ServerTarget(
        profile_id=profile.profile_id,
        profile_name=profile.name,
        incoming_protocol=profile.incoming_protocol,
        incoming=profile.incoming,
        outgoing=profile.outgoing,
        verify_tls=adv.verify_tls,
        allow_plaintext_auth=adv.allow_plaintext_auth,
        connect_timeout_s=adv.connect_timeout_s,
        max_concurrent_connections=adv.max_concurrent_connections,
    )


def build_request(
    doc: MailboxDoc,
    profile: ProfileSnapshot | None,
    settings: SettingsSnapshot,
    rings: Rings,
    now: datetime,
    *,
    test_id: str | None = None,
    attempt: int = 1,
    job_id: str | None = None,
    directions: list[str] | None = None,
    smtp_mode: SmtpMode | None = None,
) -> TestRequested:
    """The request for one test, or :class:`TestRefused` (no profile, inactive, nothing to test, ...)."""
    if not doc.active:
        raise TestRefused("mailbox_inactive", "the mailbox is deactivated")
    if not doc.profile_id:
        raise TestRefused("no_profile", "the mailbox has no email server profile", "profile_id")
    if profile is None:
        raise TestRefused(
            "profile_unknown", "the mailbox's email server profile does not exist", "profile_id"
        )
    dirs = directions or applicable_directions(doc)
    if not dirs:
        raise TestRefused(
            "nothing_to_test", "incoming and outgoing delivery are both none", "incoming_delivery"
        )
    test_id = test_id or new_test_id()
    target = target_of(profile)
    not_after = now + timedelta(seconds=rings.transit_ttl_s)
    try:
        if profile.credential_source is CredentialSource.PROFILE:
            credentials = profile_for_transit(
                rings.transit, profile, target, dirs, test_id=test_id, not_after=not_after
            )
        else:
            credentials = for_transit(
                rings.at_rest, rings.transit, doc, profile, target, dirs, test_id=test_id, not_after=not_after
            )
    except CredentialsUnreadable:
        raise TestRefused(
            "credentials_unreadable", "the stored password cannot be read: enter it again", "credentials"
        ) from None
    except CredentialsRedirected:
        raise TestRefused("credentials_redirected", REDIRECTED, "credentials") from None
    return TestRequested(
        test_id=test_id,
        mailbox=mailbox_ref(doc, profile),
        target=target,
        credential_source=profile.credential_source,
        credentials=credentials,
        directions=[Direction(d) for d in dirs],
        smtp_mode=smtp_mode or profile.advanced.smtp_mode,
        allowed_ports=list(settings.allowed_ports),
        attempt=attempt,
        job_id=job_id,
        requested_at=now,
    )


def pending_test(req: TestRequested, watchdog_s: float) -> PendingTest:
    """What a mailbox records when a test is requested, so only that test's result applies.

    ``next_retry_at`` becomes the test's watchdog: if no result has been applied ``watchdog_s``
    after the request, the retry loop (scheduler.py) finds the mailbox through that field's index and
    applies the test's stored run, if any: the result's handler stores the run before it updates the
    mailbox, and gives up after the consumer's retries. The result's own update clears it (or sets
    the retry time), so this costs no write and no index of its own.
    """
    return PendingTest(
        pending_test_id=req.test_id,
        pending_attempt=req.attempt,
        pending_job_id=req.job_id,
        pending_directions=[d.value for d in req.directions],
        test_scheduled=True,
        next_retry_at=req.requested_at + timedelta(seconds=watchdog_s),
        retry_attempt=None,
        retry_directions=[],
    )
