"""The retry-or-disable decision as pure logic (no servers)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from mailbox_helpers import PROFILE_OWNER, completed_for

from contracts.errors import ErrorCode
from contracts.events import SettingsSnapshot, TestRequested
from contracts.models import (
    Direction,
    Endpoint,
    IncomingProtocol,
    MailboxRef,
    ServerTarget,
    StepResult,
    TlsMode,
)
from mailbox_svc.documents import MailboxDoc
from mailbox_svc.handlers import applies
from mailbox_svc.policy import RetryPolicy, decide, outcome
from mailbox_svc.testing import job_test_id

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def doc(**over: Any) -> MailboxDoc:
    base = {
        "_id": "m1",
        "email": "a@example.com",
        "created_at": NOW,
        "updated_at": NOW,
        "owner": {"kind": "user", "id": "u1", "name": "U"},
        "approval": "approved",
        "incoming_status": "not_run",
        "outgoing_status": "not_run",
        "act_status": "not_applicable",
        "enabled_incoming": False,
        "enabled_outgoing": False,
        "pending_attempt": 1,
        "retry_count": 0,
        "last_error": None,
    }
    return MailboxDoc.model_validate({**base, **over})


def request(
    attempt: int = 1, directions: tuple[Direction, ...] = (Direction.INCOMING, Direction.OUTGOING)
) -> TestRequested:
    ep = Endpoint(host="mail.example.com", port=993, tls=TlsMode.IMPLICIT)
    return TestRequested(
        test_id="t1",
        mailbox=MailboxRef(
            mailbox_id="m1",
            email="a@example.com",
            owner=PROFILE_OWNER,
            profile_id="p1",
            profile_owner=PROFILE_OWNER,
        ),
        target=ServerTarget(
            profile_id="p1",
            profile_name="p",
            incoming_protocol=IncomingProtocol.IMAP,
            incoming=ep,
            outgoing=ep,
        ),
        directions=list(directions),
        attempt=attempt,
        requested_at=NOW,
    )


POLICY = RetryPolicy(max_attempts=3, interval_s=300, jitter=0.1)


def test_jitter_stays_within_bounds() -> None:
    rng = random.Random(7)
    delays = [POLICY.delay_s(rng) for _ in range(200)]
    assert min(delays) >= 270 and max(delays) <= 330 and len(set(delays)) > 100


def test_transient_schedules_then_exhausts_to_disable() -> None:
    d = decide(
        doc(),
        completed_for(request(), incoming=ErrorCode.DNS_TIMEOUT),
        SettingsSnapshot(),
        POLICY,
        NOW,
        random.Random(1),
    )
    assert d.retry_directions == ["incoming"] and d.state.retry_attempt == 2
    assert NOW + timedelta(seconds=269) < d.state.next_retry_at < NOW + timedelta(seconds=331)
    assert d.state.enabled_outgoing is True and d.event.disabled_reason is None
    last = decide(
        doc(pending_attempt=3, retry_count=2),
        completed_for(request(3), incoming=ErrorCode.DNS_TIMEOUT),
        SettingsSnapshot(),
        POLICY,
        NOW,
        random.Random(1),
    )
    assert last.retry_directions == [] and last.state.next_retry_at is None
    assert last.state.enabled_incoming is False and last.event.disabled_reason is ErrorCode.DNS_TIMEOUT


def test_outcome_and_success_reset() -> None:
    ok = completed_for(request())
    assert outcome(ok) == "success"
    assert outcome(completed_for(request(), outgoing=ErrorCode.CERT_EXPIRED)) == "cert_expired"
    d = decide(
        doc(retry_count=4, last_error={"code": "tcp_timeout", "message": "timed out", "count": 4}),
        ok,
        SettingsSnapshot(),
        POLICY,
        NOW,
        random.Random(),
    )
    assert d.state.retry_count == 0 and d.state.last_error is None and d.state.test_scheduled is False


def test_approval_is_by_owner_kind() -> None:
    settings = SettingsSnapshot(approved_users_only=False, approved_queues_only=True)
    user = decide(doc(approval="pending"), completed_for(request()), settings, POLICY, NOW, random.Random())
    assert user.state.enabled_incoming is True
    queue = decide(
        doc(approval="pending", owner={"kind": "queue", "id": "q", "name": "Q"}),
        completed_for(request()),
        settings,
        POLICY,
        NOW,
        random.Random(),
    )
    assert (
        queue.state.enabled_incoming is False
        and queue.event.disabled_reason is ErrorCode.MAILBOX_NOT_APPROVED
    )


def test_refuses_to_start_without_keys_outside_dev_mode() -> None:
    import pytest

    from mailbox_svc.app import create_app
    from mailbox_svc.config import Settings
    from mailwarden_runtime.keys import MissingKeyError

    with pytest.raises(MissingKeyError, match="MW_MAILBOX_CREDENTIAL_KEYS"):
        create_app(Settings(dev_mode=False, log_setup=False, credential_keys=None, transit_keys=None))


def test_rejected_mailbox_is_never_enabled() -> None:
    free = SettingsSnapshot(approved_users_only=False, approved_queues_only=False)
    d = decide(doc(approval="rejected"), completed_for(request()), free, POLICY, NOW, random.Random())
    assert d.state.enabled_incoming is False and d.event.disabled_reason is ErrorCode.MAILBOX_NOT_APPROVED


def test_a_login_paused_by_the_breaker_is_retried_when_logins_resume() -> None:
    """The tester says when the paused login may be tried again; the retry is not sooner."""
    resume = NOW + timedelta(minutes=14)
    paused = completed_for(request(), incoming=ErrorCode.AUTH_BREAKER_OPEN)
    assert paused.incoming is not None
    step = StepResult(
        name="credentials",
        ok=False,
        duration_ms=1.0,
        facts={"paused_by": "same_password", "resume_at": resume.isoformat()},
        error_code=ErrorCode.AUTH_BREAKER_OPEN,
    )
    paused = paused.model_copy(update={"incoming": paused.incoming.model_copy(update={"steps": [step]})})
    d = decide(doc(), paused, SettingsSnapshot(), POLICY, NOW, random.Random(1))
    assert d.retry_directions == ["incoming"]
    assert d.state.next_retry_at == resume and d.event.next_retry_at == resume
    early = completed_for(request(), incoming=ErrorCode.AUTH_BREAKER_OPEN)  # no resume time: the usual delay
    d = decide(doc(), early, SettingsSnapshot(), POLICY, NOW, random.Random(1))
    assert d.state.next_retry_at < NOW + timedelta(seconds=331)


def test_a_jobs_result_applies_once_unless_something_superseded_it() -> None:
    """A job's tests are not recorded on the mailbox (jobs.py): what decides is the result itself."""
    job_test = job_test_id("job1", "m1")
    req = request().model_copy(update={"test_id": job_test, "job_id": "job1"})
    result = completed_for(req)
    idle = doc(pending_attempt=None)
    assert applies(idle, result)
    assert not applies(idle.model_copy(update={"last_test_id": job_test}), result)  # applied already
    later = result.finished_at + timedelta(seconds=1)
    assert not applies(idle.model_copy(update={"last_test_completed_at": later}), result)  # a newer test
    assert not applies(idle.model_copy(update={"pending_test_id": "t-single"}), result)  # that one applies
    reset_after = idle.model_copy(update={"tests_reset_at": NOW + timedelta(seconds=1)})
    assert not applies(reset_after, result)  # the server changed after the request: about the old one
    assert applies(idle.model_copy(update={"tests_reset_at": NOW - timedelta(seconds=1)}), result)
    assert not applies(reset_after, result.model_copy(update={"requested_at": None}))
    forged = completed_for(request().model_copy(update={"test_id": "t-other", "job_id": "job1"}))
    assert not applies(idle, forged)  # not the job's test of this mailbox
    single = completed_for(request())
    assert applies(idle.model_copy(update={"pending_test_id": "t1"}), single)
    assert not applies(idle, single)  # a single test applies only while pending
